"""UEFI structures found in TCG event data: GUIDs, variables, signature databases, load options,
device paths, image-load, GPT, handoff-table, firmware-blob and SP800-155 events.

All functions are pure functions of untrusted bytes: no I/O, no policy, MalformedEvidence on any
malformed input.
"""

from __future__ import annotations

from .devicepath import DevicePathNode, device_path_to_text, parse_device_path
from .guid import (
    EFI_CERT_SHA256,
    EFI_CERT_X509,
    EFI_GLOBAL_VARIABLE,
    EFI_IMAGE_SECURITY_DATABASE,
    SHIM_LOCK,
    WELL_KNOWN,
    Guid,
    well_known,
)
from .signatures import (
    SignatureEntry,
    SignatureList,
    X509Certificate,
    parse_signature_data,
    parse_signature_lists,
)
from .structures import (
    FirmwareBlob,
    GptEvent,
    GptHeader,
    GptPartition,
    HandoffTables,
    ImageLoadEvent,
    LoadOption,
    Sp800155Event,
    UefiVariableData,
    parse_firmware_blob,
    parse_firmware_blob2,
    parse_gpt_event,
    parse_handoff_tables,
    parse_image_load_event,
    parse_load_option,
    parse_sp800_155_event,
    parse_startup_locality,
    parse_variable_data,
)

__all__ = [
    "EFI_CERT_SHA256",
    "EFI_CERT_X509",
    "EFI_GLOBAL_VARIABLE",
    "EFI_IMAGE_SECURITY_DATABASE",
    "SHIM_LOCK",
    "WELL_KNOWN",
    "DevicePathNode",
    "FirmwareBlob",
    "GptEvent",
    "GptHeader",
    "GptPartition",
    "Guid",
    "HandoffTables",
    "ImageLoadEvent",
    "LoadOption",
    "SignatureEntry",
    "SignatureList",
    "Sp800155Event",
    "UefiVariableData",
    "X509Certificate",
    "device_path_to_text",
    "parse_device_path",
    "parse_firmware_blob",
    "parse_firmware_blob2",
    "parse_gpt_event",
    "parse_handoff_tables",
    "parse_image_load_event",
    "parse_load_option",
    "parse_signature_data",
    "parse_signature_lists",
    "parse_sp800_155_event",
    "parse_startup_locality",
    "parse_variable_data",
    "well_known",
]
