"""The cluster stage: Kubernetes bootstrapped on the lab's nodes (kubeadm configuration so far)."""
