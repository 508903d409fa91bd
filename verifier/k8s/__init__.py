"""Kubernetes integration: the scheduler extender's wire format (``extender``), the node
controller (``controller``) that maps verdicts to Node conditions, labels, taints and the EAR
annotation, and its leader election on a Lease (``leader``)."""
