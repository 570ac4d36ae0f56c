"""CSDS: envoy.service.status.v3.ClientStatusDiscoveryService over istiolite's view of proxies."""

from __future__ import annotations

from typing import TYPE_CHECKING

from envoy.service.status.v3 import csds_pb2_grpc

if TYPE_CHECKING:
    from istiolite.xds.ads import AdsService


class CsdsService(csds_pb2_grpc.ClientStatusDiscoveryServiceServicer):
    def __init__(self, ads: AdsService) -> None:
        self.ads = ads
