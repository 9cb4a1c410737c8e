"""Helm releases of a lab's ``addons:`` list: values (:mod:`.values`), chart sources (:mod:`.charts`),
the helm commands run from the host against the lab's kubeconfig (:mod:`.helm`) and the step (:mod:`.step`)."""
