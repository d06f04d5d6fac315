"""``falconet service`` (registered in :mod:`falconet.cli`)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from falconet.server.commands import _is_loopback


def service(
    data_dir: Path = typer.Option(Path("falconet-data"), "--data-dir", help="Where the database, images and models live"),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; a non-loopback address needs keys"),
    port: int = typer.Option(8080, "--port", "-p"),
    training_key: Optional[str] = typer.Option(None, "--training-key", envvar="FALCONET_TRAINING_KEY",
                                               help="Require this Training-Key header (prefer the environment variable)"),
    prediction_key: Optional[str] = typer.Option(None, "--prediction-key", envvar="FALCONET_PREDICTION_KEY",
                                                 help="Require this Prediction-Key header on prediction routes"),
    quick_budget: Optional[float] = typer.Option(None, "--quick-budget", min=1.0,
                                                 help="Seconds a Regular (quick) training may take (default: per task)"),
    allow_private_urls: bool = typer.Option(False, "--allow-private-urls",
                                            help="Let image URLs point at loopback, private and link-local addresses (your LAN)"),
) -> None:
    """Run the training service: Custom Vision's Training and Prediction APIs over a local data directory."""
    import uvicorn

    from falconet.server.service.app import create_service_app
    from falconet.server.service.settings import ServiceSettings

    if (training_key is None or prediction_key is None) and not _is_loopback(host):
        raise typer.BadParameter("without --training-key and --prediction-key the service binds to loopback only "
                                 "(127.0.0.1); set both keys to listen on other addresses", param_hint="--host")
    if training_key is None:
        typer.echo("No training key: the service accepts every request, so it listens on loopback only.", err=True)
    from falconet.server.urlfetch import UrlPolicy

    settings = ServiceSettings(data_dir=data_dir, training_key=training_key, prediction_key=prediction_key,
                               quick_budget_s=quick_budget, url_policy=UrlPolicy(allow_private=allow_private_urls))
    app = create_service_app(settings, log=lambda line: typer.echo(line, err=True))
    typer.echo(f"Falconet training service on http://{host}:{port} (data in {data_dir.resolve()}); "
               f"SDK endpoint: http://{host}:{port}", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
