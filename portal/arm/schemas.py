"""The parts of the ARM API's OpenAPI 3.0 description that operations share: component schemas,
parameters, the error responses, and the builders routes.py uses to declare each operation's
request and responses.

Written by hand from azure-api.md (the wire contract). Enums whose wire values are a model's
choices are generated from those choices. openapi.py puts these together with the route table
(routes.py) into /arm/openapi.json; schemathesis checks real responses against them
(tests/test_arm_fuzz.py).
"""

from patching.models import OperationStatus, RebootStatus
from patching.vocabulary import Classification, FaultKind, PatchState, RebootBehavior
from vms.regions import REGIONS
from vms.vocabulary import AssessmentMode, PatchMode, RebootSetting, RegistrationState

# --- Building blocks ------------------------------------------------------------------------------


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(properties: dict, required: list[str] | None = None, **extra) -> dict:
    schema = {"type": "object", "properties": properties, **extra}
    if required:
        schema["required"] = required
    return schema


def tolerant(properties: dict, required: list[str] | None = None, *, not_null: tuple[str, ...] = ()) -> dict:
    """A request object whose optional properties may also be null, which the API reads as absent.

    Properties not listed are accepted and ignored (a client may send back a whole GET body).
    """
    required = required or []

    def allow_null(name: str, schema: dict) -> dict:
        if name in required or name in not_null:
            return schema
        if "$ref" in schema:
            return {"allOf": [schema], "nullable": True}
        if "enum" in schema:  # OpenAPI 3.0.3: with an enum, null must be one of its values
            return {**schema, "enum": [*schema["enum"], None], "nullable": True}
        return {**schema, "nullable": True}

    def no_nul(schema: dict) -> dict:
        # No database column can hold a NUL character: such a string is refused (400).
        if schema.get("type") == "string" and "enum" not in schema and "pattern" not in schema:
            return {**schema, "pattern": NO_NUL}
        return schema

    return obj({name: allow_null(name, no_nul(schema)) for name, schema in properties.items()}, required)


def array(items: dict) -> dict:
    return {"type": "array", "items": items}


def enum(*values: str, nullable: bool = False) -> dict:
    schema = {"type": "string", "enum": list(values)}
    if nullable:
        schema["nullable"] = True
    return schema


def choices(vocabulary, *, without=(), unknown: bool = False) -> dict:
    """The enum of a model's TextChoices, in their order: the wire values are the stored values.

    `unknown` puts "Unknown" first, a value Azure's enum has that the model never stores; `without`
    leaves out stored values the wire never shows.
    """
    values = [str(value) for value in vocabulary.values if value not in without]
    return enum(*(["Unknown"] if unknown else []), *values)


def nullable(schema: dict) -> dict:
    return {**schema, "nullable": True}


STR = {"type": "string"}
NO_NUL = "^[^\\u0000]*$"
# ARM names: no control characters (400 InvalidParameter otherwise).
NAME = {"type": "string", "pattern": "^[^\\u0000-\\u001f\\u007f]+$"}
BOOL = {"type": "boolean"}
INT = {"type": "integer", "minimum": 0}
TIME = {"type": "string", "format": "date-time"}
NTIME = {"type": "string", "format": "date-time", "nullable": True}
# Region names as ARM writes them ("westeurope") or shows them ("West Europe"); any spacing or case works.
REGION = {"type": "string", "enum": sorted({*REGIONS, *REGIONS.values()})}
KB = {"type": "string", "pattern": "^\\s*(?:[Kk][Bb])?[0-9]{6,8}\\s*$", "description": "KB5012345 or 5012345."}


def listing(item: str) -> dict:
    return obj({"value": array(ref(item)), "nextLink": STR}, ["value"])


# PatchOperationStatus: a queued operation (NotStarted) is already InProgress on the wire (patches.WIRE_STATUS).
PATCH_STATUS = choices(OperationStatus, without=[OperationStatus.NOT_STARTED], unknown=True)
REBOOT_BEHAVIOR = choices(RebootBehavior, unknown=True)
CLASSIFICATION = choices(Classification)
# PatchInstallationState: an installation's results; Available is an assessment's, never an installation's.
INSTALLATION_STATE = choices(PatchState, without=[PatchState.AVAILABLE], unknown=True)
PATCH_MODE = choices(PatchMode)
ASSESSMENT_MODE = choices(AssessmentMode)
# Azure reports "Unknown" for a VM's rebootSetting (and accepts it: it means IfRequired); installPatches'
# rebootSetting takes only the three.
PLATFORM_REBOOT_SETTING = choices(RebootSetting, unknown=True)
INSTALL_REBOOT_SETTING = choices(RebootSetting)

FAULT_KIND = choices(FaultKind)
SANDBOX_FAULT_PROPERTIES = {
    "kind": FAULT_KIND,
    "vmId": {**STR, "description": "One VM's resource id (Contributor on its subscription)."},
    "subscriptionId": {"type": "string", "format": "uuid", "description": "Every VM of one subscription."},
    "location": {**REGION, "description": "Every VM of one region (required for rollout_halt)."},
    "kb": {**KB, "description": "kb_fails: the KB that fails; absent: every KB fails."},
    "probability": {"type": "number", "exclusiveMinimum": True, "minimum": 0, "maximum": 1},
    "nextOperations": {"type": "integer", "minimum": 1, "maximum": 1000000},
}

SCHEMAS = {
    "SandboxClock": obj(
        {
            "id": STR,
            "name": STR,
            "type": STR,
            "properties": obj(
                {
                    "mode": enum("realtime", "sandbox"),
                    "now": TIME,
                    "advancing": BOOL,
                    "maxAdvanceDays": INT,
                    "activeFaults": INT,
                    "lastAdvance": obj(
                        {
                            "from": TIME,
                            "to": TIME,
                            "switchedToSandbox": BOOL,
                            "rounds": INT,
                            "operations": INT,
                            "seconds": {"type": "number"},
                            "message": STR,
                        }
                    ),
                },
                ["mode", "now", "advancing", "maxAdvanceDays"],
            ),
        },
        ["id", "properties"],
    ),
    "SandboxAdvance": {
        **tolerant(
            {
                "days": {"type": "number", "exclusiveMinimum": True, "minimum": 0, "description": "Days to advance."},
                "to": {**TIME, "description": "The moment to advance to (UTC if no offset)."},
            }
        ),
        "description": "Either days or to.",
    },
    "SandboxFaultRequest": {
        **tolerant(SANDBOX_FAULT_PROPERTIES, ["kind"]),
        "description": "A scope (vmId, subscriptionId, location, or none: the whole fleet) and either "
        "probability or nextOperations.",
    },
    "SandboxFault": obj(
        {
            "id": STR,
            "name": STR,
            "type": STR,
            "properties": obj(
                {
                    "kind": FAULT_KIND,
                    "vmId": nullable(STR),
                    "subscriptionId": nullable(STR),
                    "location": nullable(STR),
                    "kb": nullable(STR),
                    "probability": {"type": "number", "nullable": True},
                    "nextOperations": {"type": "integer", "minimum": 0, "nullable": True},
                    "fired": INT,
                    "active": BOOL,
                    "description": STR,
                    "createdAt": TIME,
                },
                ["kind", "fired", "active"],
            ),
        },
        ["id", "properties"],
    ),
    "SandboxFaultListResult": listing("SandboxFault"),
    "ErrorDetail": obj({"code": STR, "message": STR, "target": STR}, ["code", "message"]),
    "ErrorResponse": obj(
        {
            "error": obj(
                {"code": STR, "message": STR, "target": STR, "details": array(ref("ErrorDetail"))},
                ["code", "message"],
            )
        },
        ["error"],
    ),
    "ApiError": nullable(
        obj({"code": STR, "message": STR, "target": STR, "details": array(ref("ErrorDetail"))}, ["code", "message"])
    ),
    "Subscription": obj(
        {
            "id": STR,
            "subscriptionId": {"type": "string", "format": "uuid"},
            "displayName": STR,
            "state": enum("Enabled", "Warned", "PastDue", "Disabled", "Deleted"),
            "tenantId": STR,
            "authorizationSource": STR,
            "managedByTenants": array(obj({"tenantId": STR})),
            "subscriptionPolicies": obj({"locationPlacementId": STR, "quotaId": STR, "spendingLimit": STR}),
        },
        ["id", "subscriptionId", "displayName", "state", "tenantId"],
    ),
    "SubscriptionListResult": listing("Subscription"),
    "Tenant": obj(
        {
            "id": STR,
            "tenantId": STR,
            "tenantCategory": STR,
            "displayName": STR,
            "defaultDomain": STR,
            "domains": array(STR),
        },
        ["id", "tenantId"],
    ),
    "TenantListResult": listing("Tenant"),
    "Location": obj(
        {
            "id": STR,
            "subscriptionId": STR,
            "name": STR,
            "type": STR,
            "displayName": STR,
            "regionalDisplayName": STR,
            "metadata": obj({"regionType": STR, "pairedRegion": array(obj({"name": STR, "id": STR}))}),
        },
        ["id", "name", "displayName"],
    ),
    "LocationListResult": listing("Location"),
    "ResourceGroup": obj(
        {
            "id": STR,
            "name": STR,
            "type": STR,
            "location": STR,
            "properties": obj({"provisioningState": STR}),
        },
        ["id", "name", "location"],
    ),
    "ResourceGroupCreate": tolerant({"location": REGION, "tags": ref("Tags")}, ["location"]),
    "ResourceGroupListResult": listing("ResourceGroup"),
    "PatchSettings": obj(
        {
            "patchMode": PATCH_MODE,
            "enableHotpatching": BOOL,
            "assessmentMode": ASSESSMENT_MODE,
            "automaticByPlatformSettings": obj(
                {
                    "rebootSetting": PLATFORM_REBOOT_SETTING,
                    "bypassPlatformSafetyChecksOnUserSchedule": BOOL,
                }
            ),
        }
    ),
    "WindowsConfiguration": obj(
        {
            "provisionVMAgent": BOOL,
            "enableAutomaticUpdates": BOOL,
            "timeZone": STR,
            "patchSettings": ref("PatchSettings"),
        }
    ),
    "ImageReference": obj(
        {"publisher": STR, "offer": STR, "sku": STR, "version": STR, "exactVersion": {**STR, "readOnly": True}}
    ),
    "VirtualMachineProperties": obj(
        {
            "vmId": {**STR, "readOnly": True},
            "hardwareProfile": obj({"vmSize": STR}),
            "storageProfile": obj(
                {"imageReference": ref("ImageReference"), "osDisk": {"type": "object"}, "dataDisks": array({})}
            ),
            "osProfile": obj(
                {
                    "computerName": STR,
                    "adminUsername": STR,
                    "adminPassword": {**STR, "writeOnly": True},
                    "windowsConfiguration": ref("WindowsConfiguration"),
                    "secrets": array({}),
                    "allowExtensionOperations": BOOL,
                }
            ),
            "availabilitySet": obj({"id": STR}),
            "provisioningState": {**STR, "readOnly": True},
            "timeCreated": {**TIME, "readOnly": True},
            "instanceView": {**ref("VirtualMachineInstanceView"), "readOnly": True},
        }
    ),
    "VirtualMachine": obj(
        {
            "id": {**STR, "readOnly": True},
            "name": {**STR, "readOnly": True},
            "type": {**STR, "readOnly": True},
            "location": STR,
            "tags": ref("Tags"),
            "zones": array(STR),
            "etag": {**STR, "readOnly": True, "description": "Changes on every write; for If-Match / If-None-Match."},
            "properties": ref("VirtualMachineProperties"),
        },
        ["location"],
    ),
    "Tags": {"type": "object", "additionalProperties": STR},
    # What PUT and PATCH read; anything else in the body (read-only fields of a GET body) is ignored.
    "PatchSettingsInput": tolerant(
        {
            "patchMode": PATCH_MODE,
            "enableHotpatching": BOOL,
            "assessmentMode": ASSESSMENT_MODE,
            "automaticByPlatformSettings": tolerant(
                {
                    "rebootSetting": PLATFORM_REBOOT_SETTING,
                    "bypassPlatformSafetyChecksOnUserSchedule": BOOL,
                }
            ),
        }
    ),
    "VirtualMachinePropertiesInput": tolerant(
        {
            "hardwareProfile": tolerant({"vmSize": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,40}$"}}),
            "storageProfile": tolerant({"imageReference": tolerant({"publisher": STR, "offer": STR, "sku": STR})}),
            "osProfile": tolerant(
                {
                    "windowsConfiguration": tolerant(
                        {
                            "provisionVMAgent": BOOL,
                            "enableAutomaticUpdates": BOOL,
                            "timeZone": {**STR, "description": "An IANA time zone, e.g. Europe/Stockholm."},
                            "patchSettings": ref("PatchSettingsInput"),
                        }
                    )
                }
            ),
            "availabilitySet": tolerant(
                {"id": {"type": "string", "pattern": "^(.*/)?[A-Za-z0-9]([A-Za-z0-9_.-]{0,62}[A-Za-z0-9_])?$"}}
            ),
        }
    ),
    "VirtualMachineCreateOrUpdate": tolerant(
        {
            "location": REGION,
            "tags": ref("Tags"),
            "zones": {**array(STR), "maxItems": 1},
            "properties": ref("VirtualMachinePropertiesInput"),
        },
        ["location"],
    ),
    "VirtualMachineUpdate": tolerant(
        {
            "tags": ref("Tags"),
            "zones": {**array(STR), "maxItems": 1},
            "properties": ref("VirtualMachinePropertiesInput"),
        }
    ),
    "VirtualMachineListResult": listing("VirtualMachine"),
    "InstanceViewStatus": obj(
        {
            "code": STR,
            "level": enum("Info", "Warning", "Error"),
            "displayStatus": STR,
            "message": STR,
            "time": TIME,
        }
    ),
    "AvailablePatchSummary": obj(
        {
            "status": PATCH_STATUS,
            "assessmentActivityId": STR,
            "rebootPending": BOOL,
            "criticalAndSecurityPatchCount": INT,
            "otherPatchCount": INT,
            "startTime": TIME,
            "lastModifiedTime": TIME,
            "error": ref("ApiError"),
        }
    ),
    "LastPatchInstallationSummary": obj(
        {
            "status": PATCH_STATUS,
            "installationActivityId": STR,
            "maintenanceWindowExceeded": BOOL,
            "notSelectedPatchCount": INT,
            "excludedPatchCount": INT,
            "pendingPatchCount": INT,
            "installedPatchCount": INT,
            "failedPatchCount": INT,
            "startTime": TIME,
            "lastModifiedTime": TIME,
            "error": ref("ApiError"),
        }
    ),
    "VirtualMachinePatchStatus": obj(
        {
            "availablePatchSummary": ref("AvailablePatchSummary"),
            "lastPatchInstallationSummary": ref("LastPatchInstallationSummary"),
            "configurationStatuses": array(ref("InstanceViewStatus")),
        }
    ),
    "VirtualMachineInstanceView": obj(
        {
            "computerName": STR,
            "osName": STR,
            "osVersion": STR,
            "hyperVGeneration": STR,
            "platformUpdateDomain": INT,
            "platformFaultDomain": INT,
            "vmAgent": obj({"vmAgentVersion": STR, "statuses": array(ref("InstanceViewStatus"))}),
            "patchStatus": ref("VirtualMachinePatchStatus"),
            "statuses": array(ref("InstanceViewStatus")),
        }
    ),
    "VirtualMachineInstallPatchesParameters": tolerant(
        {
            "maximumDuration": {
                "type": "string",
                "description": "ISO 8601, 10 minutes to 4 hours; PT4H and PT04H00M00S both parse.",
            },
            "rebootSetting": INSTALL_REBOOT_SETTING,
            "windowsParameters": tolerant(
                {
                    "classificationsToInclude": array(CLASSIFICATION),
                    "kbNumbersToInclude": array(KB),
                    "kbNumbersToExclude": array(KB),
                    "excludeKbsRequiringReboot": BOOL,
                    "maxPatchPublishDate": TIME,
                },
                not_null=("excludeKbsRequiringReboot", "classificationsToInclude", "kbNumbersToInclude"),
            )
            | {
                # At least one classification or KB to include.
                "anyOf": [
                    {
                        "required": ["classificationsToInclude"],
                        "properties": {"classificationsToInclude": {"minItems": 1}},
                    },
                    {"required": ["kbNumbersToInclude"], "properties": {"kbNumbersToInclude": {"minItems": 1}}},
                ]
            },
            "linuxParameters": {"type": "object", "description": "Accepted (the Azure CLI sends {}) and ignored."},
        },
        ["rebootSetting", "windowsParameters"],
    ),
    "VirtualMachineAssessPatchesResult": obj(
        {
            "status": PATCH_STATUS,
            "assessmentActivityId": STR,
            "rebootPending": BOOL,
            "criticalAndSecurityPatchCount": INT,
            "otherPatchCount": INT,
            "startDateTime": TIME,
            "availablePatches": array(
                obj(
                    {
                        "patchId": STR,
                        "name": STR,
                        "version": STR,
                        "kbId": STR,
                        "classifications": array(STR),
                        "rebootBehavior": REBOOT_BEHAVIOR,
                        "activityId": STR,
                        "publishedDate": TIME,
                        "lastModifiedDateTime": NTIME,
                        "assessmentState": enum("Unknown", str(PatchState.AVAILABLE)),
                    }
                )
            ),
            "error": ref("ApiError"),
        },
        ["status", "assessmentActivityId", "availablePatches"],
    ),
    "VirtualMachineInstallPatchesResult": obj(
        {
            "status": PATCH_STATUS,
            "installationActivityId": STR,
            "rebootStatus": choices(RebootStatus),
            "maintenanceWindowExceeded": BOOL,
            "excludedPatchCount": INT,
            "notSelectedPatchCount": INT,
            "pendingPatchCount": INT,
            "installedPatchCount": INT,
            "failedPatchCount": INT,
            "patches": array(
                obj(
                    {
                        "patchId": STR,
                        "name": STR,
                        "version": STR,
                        "kbId": STR,
                        "classifications": array(STR),
                        "installationState": INSTALLATION_STATE,
                    }
                )
            ),
            "startDateTime": TIME,
            "error": ref("ApiError"),
        },
        ["status", "installationActivityId", "patches"],
    ),
    "OperationStatusResponse": obj(
        {
            "name": STR,
            "status": enum("InProgress", "Succeeded", "Failed", "Canceled"),
            "startTime": TIME,
            "endTime": TIME,
            "properties": obj({"output": {"type": "object"}}),
            "error": obj({"code": STR, "message": STR}),
        },
        ["name", "status", "startTime"],
    ),
    "FeatureResult": obj(
        {"id": STR, "name": STR, "type": STR, "properties": obj({"state": STR})},
        ["id", "name", "type", "properties"],
    ),
    "FeatureOperationsListResult": listing("FeatureResult"),
    "Operation": obj({"name": STR, "display": obj({"provider": STR, "resource": STR, "operation": STR})}),
    "OperationListResult": listing("Operation"),
    "Provider": obj(
        {
            "id": STR,
            "namespace": STR,
            "registrationState": choices(RegistrationState),
            "registrationPolicy": STR,
            "resourceTypes": array(
                obj({"resourceType": STR, "locations": array(STR), "apiVersions": array(STR), "capabilities": STR})
            ),
        },
        ["id", "namespace", "registrationState"],
    ),
    "ProviderListResult": listing("Provider"),
    # Microsoft.Maintenance (Maintenance.json 2023-04-01)
    "MaintenanceConfiguration": tolerant(
        {
            "id": STR,
            "name": STR,
            "type": STR,
            "location": STR,
            "tags": {"type": "object", "additionalProperties": STR},
            "systemData": {"type": "object"},
            "properties": obj(
                {
                    "namespace": STR,
                    "extensionProperties": {"type": "object", "additionalProperties": STR},
                    "maintenanceScope": enum("InGuestPatch"),
                    "visibility": enum("Custom", "Public"),
                    "maintenanceWindow": obj(
                        {
                            "startDateTime": {**STR, "description": "yyyy-MM-dd HH:mm, wall clock in timeZone."},
                            "expirationDateTime": STR,
                            "duration": {**STR, "description": "HH:mm, 01:30 to 03:55."},
                            "timeZone": {**STR, "description": "A Windows time-zone name, e.g. Pacific Standard Time."},
                            "recurEvery": {
                                **STR,
                                "description": "[n]Hour(s) | [n]Day(s) | [n]Week(s) [weekdays] | [n]Month(s) "
                                "[day1,...] or First..Last <weekday> [Offset-6..6].",
                            },
                        }
                    ),
                    "installPatches": obj(
                        {
                            "rebootSetting": enum("IfRequired", "Never", "Always"),
                            "windowsParameters": obj(
                                {
                                    "classificationsToInclude": array(STR),
                                    "kbNumbersToInclude": array(STR),
                                    "kbNumbersToExclude": array(STR),
                                    "excludeKbsRequiringReboot": BOOL,
                                }
                            ),
                            "linuxParameters": {"type": "object"},
                        }
                    ),
                    "preEventMinutes": {"type": "integer", "minimum": 0, "maximum": 20},
                }
            ),
        },
        ["location"],
    ),
    "MaintenanceConfigurationListResult": listing("MaintenanceConfiguration"),
    "ConfigurationAssignment": tolerant(
        {
            "id": STR,
            "name": STR,
            "type": STR,
            "location": STR,
            "systemData": {"type": "object"},
            "properties": obj(
                {
                    "maintenanceConfigurationId": STR,
                    "resourceId": STR,
                    "filter": obj(
                        {
                            "resourceTypes": array(STR),
                            "resourceGroups": array(STR),
                            "osTypes": array(STR),
                            "locations": array(STR),
                            "tagSettings": obj(
                                {
                                    "tags": {"type": "object", "additionalProperties": array(STR)},
                                    "filterOperator": enum("All", "Any"),
                                }
                            ),
                        }
                    ),
                }
            ),
        },
        ["properties"],
    ),
    "ConfigurationAssignmentListResult": listing("ConfigurationAssignment"),
    "ApplyUpdate": obj(
        {
            "id": STR,
            "name": STR,
            "type": STR,
            "properties": obj(
                {
                    "status": enum(
                        "Pending", "InProgress", "Completed", "RetryNow", "RetryLater", "Cancel", "Cancelled"
                    ),
                    "resourceId": STR,
                    "lastUpdateTime": TIME,
                }
            ),
        }
    ),
    "ApplyUpdateListResult": listing("ApplyUpdate"),
    "MaintenanceUpdateListResult": listing("MaintenanceUpdate"),
    "MaintenanceUpdate": obj(
        {
            "maintenanceScope": STR,
            "impactType": enum("None", "Freeze", "Restart", "Redeploy"),
            "status": STR,
            "impactDurationInSec": INT,
            "notBefore": TIME,
            "properties": obj({"resourceId": STR}),
        }
    ),
    "CloudMetadata": obj(
        {
            "name": STR,
            "portal": STR,
            "resourceManager": STR,
            "authentication": obj(
                {
                    "loginEndpoint": STR,
                    "audiences": array(STR),
                    "tenant": STR,
                    "identityProvider": STR,
                },
                ["loginEndpoint", "audiences"],
            ),
            "suffixes": {"type": "object"},
        },
        ["name", "authentication", "suffixes"],
    ),
}

# --- Parameters and responses ---------------------------------------------------------------------


def path_param(name: str, description: str) -> dict:
    return {"name": name, "in": "path", "required": True, "schema": NAME, "description": description}


PARAMETERS = {
    "ApiVersion": {
        "name": "api-version",
        "in": "query",
        "required": True,
        "schema": {"type": "string", "pattern": "[^ \\t\\r\\n\\f\\v]"},
        "description": "Any value that is not blank is accepted (the SDKs send 2015-12-01 to 2026-04-01).",
    },
    "SubscriptionId": path_param("subscriptionId", "A subscription GUID the caller holds a role on."),
    "ResourceGroupName": path_param("resourceGroupName", "Case-insensitive."),
    "VmName": path_param("vmName", "Case-insensitive."),
    "ProviderNamespace": path_param("providerNamespace", "Microsoft.Compute or Microsoft.Features."),
    "FeatureName": path_param(
        "featureName", "InGuestHotPatchVMPreview, InGuestAutoPatchVMPreview, InGuestPatchVMPreview."
    ),
    "Location": path_param("location", "The region of the operation, e.g. westeurope."),
    "MaintenanceConfigurationName": path_param("resourceName", "A maintenance configuration's name."),
    "ConfigurationAssignmentName": path_param("configurationAssignmentName", "A configuration assignment's name."),
    "ApplyUpdateName": path_param(
        "applyUpdateName", "default (PUT: apply now), an installation's id, or a run's UTC start yyyyMMddHHmmss."
    ),
    "OperationId": path_param("operationId", "The operation's name, from the Azure-AsyncOperation URL."),
    "FaultId": path_param("faultId", "A sandbox fault's number."),
    "Expand": {"name": "$expand", "in": "query", "schema": enum("instanceView", "userData")},
    "SkipToken": {
        "name": "$skiptoken",
        "in": "query",
        "schema": {"type": "string", "pattern": "^[0-9]{1,9}$"},
        "description": "From nextLink.",
    },
    "Top": {"name": "$top", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 999999}},
    "Monitor": {
        "name": "monitor",
        "in": "query",
        "schema": STR,
        "description": "true: the Location (result) view of the operation; anything else: its status.",
    },
}


def error(description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": ref("ErrorResponse")}}}


ERRORS = {
    "400": error("InvalidParameter, InvalidRequestFormat, InvalidRequestContent, MissingApiVersionParameter."),
    "401": error("InvalidAuthenticationToken: no valid bearer token (no WWW-Authenticate challenge)."),
    "403": error("AuthorizationFailed: the caller's role may read but not act."),
    "404": error("SubscriptionNotFound, ResourceGroupNotFound, ResourceNotFound, FeatureNotFound, NotFound."),
    "405": error("MethodNotAllowed."),
    "409": error("A conflicting operation (OperationNotAllowed) or property change (PropertyChangeNotAllowed)."),
    "413": error("RequestEntityTooLarge."),
}

LRO_HEADERS = {
    "Azure-AsyncOperation": {"description": "Absolute URL of the operation status.", "schema": STR},
    "Location": {"description": "Absolute URL of the operation result (?monitor=true).", "schema": STR},
    "Retry-After": {"description": "Seconds to wait between polls.", "schema": STR},
}
ASYNC_HEADER = {k: v for k, v in LRO_HEADERS.items() if k != "Location"}


def body(schema: str, description: str = "") -> dict:
    return {"description": description or schema, "content": {"application/json": {"schema": ref(schema)}}}


def request_body(schema: str) -> dict:
    return {**body(schema), "required": True}


LRO_202 = {"202": {"description": "Accepted: poll Azure-AsyncOperation, then GET Location.", "headers": LRO_HEADERS}}
