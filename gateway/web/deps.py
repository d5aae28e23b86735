"""Dependencies shared by the routes, as ``Annotated`` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from gateway.dispatch.dispatcher import Dispatcher
from gateway.services import Services

__all__ = ["DispatcherDep", "ServicesDep"]


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def get_dispatcher(request: Request) -> Dispatcher:
    dispatcher: Dispatcher = request.app.state.dispatcher
    return dispatcher


ServicesDep = Annotated[Services, Depends(get_services)]
DispatcherDep = Annotated[Dispatcher, Depends(get_dispatcher)]
