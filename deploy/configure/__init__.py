"""The configure stage: pyinfra driven in-process, deploys per lab role, idempotence gate."""
