"""The unlearn toolkit's Flower App (see ``unlearn.federation.deploy``)."""
