"""Module-level ServerApp and ClientApp for Flower's deployment runtime."""

from unlearn.federation.deploy import deployment_client_app, deployment_server_app

client_app = deployment_client_app()
server_app = deployment_server_app()
