"""The domain catalogue and the export platforms, in the Training API's vocabulary.

Each Falconet domain answers under the Custom Vision id it stands in for, so a script that
hard-codes "General (compact)" keeps working. Ids of hosted domains Falconet has no recipe for
(Food, Landmarks, Retail, Logo, ...) are accepted as aliases of the nearest recipe, and the
project then reports the domain that really trains it.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Optional

from falconet.core.errors import FalconetError
from falconet.training.domains import DOMAINS, Domain

CLASSIFICATION, OBJECT_DETECTION = "Classification", "ObjectDetection"
_NAMESPACE = uuid.UUID("6f1d3c9a-52b4-4d0e-9a57-0c8e1f2b7d31")

#: Display names, as the hosted catalogue names its domains.
_NAMES = {
    "general-compact": "General (compact)",
    "general-compact-mobilenet": "General (compact) [MobileNetV2]",
    "general": "General",
    "general-compact-detection": "General (compact)",
    "general-detection": "General",
}

#: Hosted domain ids with no recipe of their own -> the Falconet domain that trains them.
_ALIASES = {
    "a8e3c40f-fb4a-466f-832a-5e457ae4a344": "general",  # General [A1]
    "2e37d7fb-3a54-486a-b4d6-cfc369af0018": "general",  # General [A2]
    "c151d5b5-dd07-472a-acc8-15d29dea8518": "general",  # Food
    "ca455789-012d-4b50-9fec-5bb63841c793": "general",  # Landmarks
    "b30a91ae-e3c1-4f73-a81e-c270bff27c39": "general",  # Retail
    "a1db07ca-a19a-4830-bae8-e004a42dc863": "general-compact",  # General (compact) [S1]
    "8882951b-82cd-4c32-970b-d5f8cb8bf6d7": "general-compact",  # Food (compact)
    "b5cfd229-2ac7-4b2b-8d0a-2b0661344894": "general-compact",  # Landmarks (compact)
    "6b4faeda-8396-481b-9f8b-177b9fa3097f": "general-compact",  # Retail (compact)
    "9c616dff-2e7d-ea11-af59-1866da359ce6": "general-detection",  # OD General [A1]
    "1d8ffafe-ec40-4fb2-8f90-72b3b6cecea4": "general-detection",  # Logo
    "3780a898-81c3-4516-81ae-3a139614e1f3": "general-detection",  # Products on shelves
    "7ec2ac80-887b-48a6-8df9-8b1357765430": "general-compact-detection",  # OD General (compact) [S1]
}

#: Export platforms of the API -> flavors -> Falconet export formats (None: the platform default).
PLATFORMS: dict[str, dict[Optional[str], str]] = {
    "ONNX": {None: "onnx", "ONNX10": "onnx", "ONNX12": "onnx", "OnnxFloat16": "onnx-fp16", "OnnxInt8": "onnx-int8"},
    "TensorFlow": {"TensorFlowLite": "tflite", "TensorFlowLiteFloat16": "tflite-fp16", "TensorFlowLiteInt8": "tflite-int8"},
    "OpenVino": {None: "openvino", "OpenVinoFloat16": "openvino-fp16", "OpenVinoInt8": "openvino-int8"},
    "CoreML": {None: "coreml"},
    "DockerFile": {None: "docker", "Linux": "docker", "ARM": "docker", "Jetson": "docker-jetson"},
}


def domain_id(domain: Domain) -> str:
    return domain.custom_vision_id or str(uuid.uuid5(_NAMESPACE, domain.name))


def domain_type(domain: Domain) -> str:
    return OBJECT_DETECTION if domain.kind == "detection" else CLASSIFICATION


def resolve_domain(requested: Optional[str], default_kind: str = "classification") -> Domain:
    """The Falconet domain for a domain id (or the default compact classifier when none)."""
    if not requested:
        return DOMAINS["general-compact" if default_kind == "classification" else "general-compact-detection"]
    key = requested.lower()
    for domain in DOMAINS.values():
        if domain_id(domain) == key:
            return domain
    if key in _ALIASES:
        return DOMAINS[_ALIASES[key]]
    raise FalconetError(f"Unknown domain id {requested!r}; GET /domains lists them.", code="BadRequestProjectUnknownDomain",
                        status=400)


def exportable_platforms(domain: Domain) -> list[str]:
    return list(PLATFORMS) if domain.compact else []


def domain_json(domain: Domain) -> dict[str, Any]:
    size_mb = {"efficientnet-lite0": 14, "mobilenet-v2": 9, "efficientnet-lite2": 24}.get(domain.backbone, 0)
    return {"id": domain_id(domain), "name": _NAMES.get(domain.name, domain.name), "type": domain_type(domain),
            "exportable": domain.compact, "enabled": True, "exportablePlatforms": exportable_platforms(domain),
            "modelInformation": {"estimatedModelSizeInMegabytes": size_mb,
                                 "description": f"{domain.summary} (Falconet domain {domain.name!r})"}}


def all_domains() -> list[Domain]:
    return list(DOMAINS.values())


def export_format(platform: str, flavor: Optional[str]) -> str:
    """The Falconet format an export request means, or a clear refusal."""
    flavors = next((v for k, v in PLATFORMS.items() if k.lower() == (platform or "").lower()), None)
    if flavors is None:
        raise FalconetError(f"Falconet cannot export to {platform!r}; platforms: {', '.join(PLATFORMS)}.",
                            code="ErrorExporterInvalidPlatform", status=400)
    chosen = next((v for k, v in flavors.items() if (k or "").lower() == (flavor or "").lower()), None)
    if chosen is None:
        known = ", ".join(k for k in flavors if k) or "none"
        raise FalconetError(f"Falconet has no {platform} flavor {flavor!r} (flavors: {known}); TensorFlow exports are "
                            "TensorFlow Lite only.", code="BadRequestNotSupported", status=400)
    return chosen
