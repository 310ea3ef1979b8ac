package eventlog

import "fmt"

// Event types of the TCG PC Client Platform Firmware Profile (section 10.4.1)
// and of Intel TXT's DRTM log (Intel TXT Software Development Guide,
// appendix "Event Log Types"). Only EvNoAction changes how a log is replayed;
// the rest are names for people and policies.
const (
	EvPrebootCert           uint32 = 0x00000000
	EvPostCode              uint32 = 0x00000001
	EvUnused                uint32 = 0x00000002
	EvNoAction              uint32 = 0x00000003
	EvSeparator             uint32 = 0x00000004
	EvAction                uint32 = 0x00000005
	EvEventTag              uint32 = 0x00000006
	EvSCRTMContents         uint32 = 0x00000007
	EvSCRTMVersion          uint32 = 0x00000008
	EvCPUMicrocode          uint32 = 0x00000009
	EvPlatformConfigFlags   uint32 = 0x0000000A
	EvTableOfDevices        uint32 = 0x0000000B
	EvCompactHash           uint32 = 0x0000000C
	EvIPL                   uint32 = 0x0000000D
	EvIPLPartitionData      uint32 = 0x0000000E
	EvNonhostCode           uint32 = 0x0000000F
	EvNonhostConfig         uint32 = 0x00000010
	EvNonhostInfo           uint32 = 0x00000011
	EvOmitBootDeviceEvents  uint32 = 0x00000012
	EvPostCode2             uint32 = 0x00000013
	EvEFIEventBase          uint32 = 0x80000000
	EvEFIVariableDriverConf uint32 = 0x80000001
	EvEFIVariableBoot       uint32 = 0x80000002
	EvEFIBootServicesApp    uint32 = 0x80000003
	EvEFIBootServicesDriver uint32 = 0x80000004
	EvEFIRuntimeServicesDrv uint32 = 0x80000005
	EvEFIGPTEvent           uint32 = 0x80000006
	EvEFIAction             uint32 = 0x80000007
	EvEFIPlatformFirmware   uint32 = 0x80000008
	EvEFIHandoffTables      uint32 = 0x80000009
	EvEFIPlatformFirmware2  uint32 = 0x8000000A
	EvEFIHandoffTables2     uint32 = 0x8000000B
	EvEFIVariableBoot2      uint32 = 0x8000000C
	EvEFIGPTEvent2          uint32 = 0x8000000D
	EvEFIHCRTMEvent         uint32 = 0x80000010
	EvEFIVariableAuthority  uint32 = 0x800000E0
	EvEFISPDMFirmwareBlob   uint32 = 0x800000E1
	EvEFISPDMFirmwareConfig uint32 = 0x800000E2

	// Intel TXT DRTM events (PCRs 17-19).
	EvTXTPCRMapping         uint32 = 0x00000401
	EvTXTHashStart          uint32 = 0x00000402
	EvTXTCombinedHash       uint32 = 0x00000403
	EvTXTMLEHash            uint32 = 0x00000404
	EvTXTBIOSACRegData      uint32 = 0x0000040A
	EvTXTCPUSCRTMStat       uint32 = 0x0000040B
	EvTXTLCPControlHash     uint32 = 0x0000040C
	EvTXTElementsHash       uint32 = 0x0000040D
	EvTXTSTMHash            uint32 = 0x0000040E
	EvTXTOSSinitDataCapHash uint32 = 0x0000040F
	EvTXTSinitPubKeyHash    uint32 = 0x00000410
	EvTXTLCPHash            uint32 = 0x00000411
	EvTXTLCPDetailsHash     uint32 = 0x00000412
	EvTXTLCPAuthoritiesHash uint32 = 0x00000413
	EvTXTNVInfoHash         uint32 = 0x00000414
	EvTXTColdBootBIOSHash   uint32 = 0x00000415
	EvTXTKMHash             uint32 = 0x00000416
	EvTXTBPMHash            uint32 = 0x00000417
	EvTXTKMInfoHash         uint32 = 0x00000418
	EvTXTBPMInfoHash        uint32 = 0x00000419
	EvTXTBootPolHash        uint32 = 0x0000041A
	EvTXTRandomValue        uint32 = 0x000004FE
	EvTXTCapValue           uint32 = 0x000004FF
)

// TypeName is the specification's name of an event type, such as
// "EV_POST_CODE" or "EVTYPE_MLE_HASH", or the type in hex ("0x1234") when
// the type is not a known one.
func TypeName(t uint32) string {
	switch t {
	case EvPrebootCert:
		return "EV_PREBOOT_CERT"
	case EvPostCode:
		return "EV_POST_CODE"
	case EvUnused:
		return "EV_UNUSED"
	case EvNoAction:
		return "EV_NO_ACTION"
	case EvSeparator:
		return "EV_SEPARATOR"
	case EvAction:
		return "EV_ACTION"
	case EvEventTag:
		return "EV_EVENT_TAG"
	case EvSCRTMContents:
		return "EV_S_CRTM_CONTENTS"
	case EvSCRTMVersion:
		return "EV_S_CRTM_VERSION"
	case EvCPUMicrocode:
		return "EV_CPU_MICROCODE"
	case EvPlatformConfigFlags:
		return "EV_PLATFORM_CONFIG_FLAGS"
	case EvTableOfDevices:
		return "EV_TABLE_OF_DEVICES"
	case EvCompactHash:
		return "EV_COMPACT_HASH"
	case EvIPL:
		return "EV_IPL"
	case EvIPLPartitionData:
		return "EV_IPL_PARTITION_DATA"
	case EvNonhostCode:
		return "EV_NONHOST_CODE"
	case EvNonhostConfig:
		return "EV_NONHOST_CONFIG"
	case EvNonhostInfo:
		return "EV_NONHOST_INFO"
	case EvOmitBootDeviceEvents:
		return "EV_OMIT_BOOT_DEVICE_EVENTS"
	case EvPostCode2:
		return "EV_POST_CODE2"
	case EvEFIEventBase:
		return "EV_EFI_EVENT_BASE"
	case EvEFIVariableDriverConf:
		return "EV_EFI_VARIABLE_DRIVER_CONFIG"
	case EvEFIVariableBoot:
		return "EV_EFI_VARIABLE_BOOT"
	case EvEFIBootServicesApp:
		return "EV_EFI_BOOT_SERVICES_APPLICATION"
	case EvEFIBootServicesDriver:
		return "EV_EFI_BOOT_SERVICES_DRIVER"
	case EvEFIRuntimeServicesDrv:
		return "EV_EFI_RUNTIME_SERVICES_DRIVER"
	case EvEFIGPTEvent:
		return "EV_EFI_GPT_EVENT"
	case EvEFIAction:
		return "EV_EFI_ACTION"
	case EvEFIPlatformFirmware:
		return "EV_EFI_PLATFORM_FIRMWARE_BLOB"
	case EvEFIHandoffTables:
		return "EV_EFI_HANDOFF_TABLES"
	case EvEFIPlatformFirmware2:
		return "EV_EFI_PLATFORM_FIRMWARE_BLOB2"
	case EvEFIHandoffTables2:
		return "EV_EFI_HANDOFF_TABLES2"
	case EvEFIVariableBoot2:
		return "EV_EFI_VARIABLE_BOOT2"
	case EvEFIGPTEvent2:
		return "EV_EFI_GPT_EVENT2"
	case EvEFIHCRTMEvent:
		return "EV_EFI_HCRTM_EVENT"
	case EvEFIVariableAuthority:
		return "EV_EFI_VARIABLE_AUTHORITY"
	case EvEFISPDMFirmwareBlob:
		return "EV_EFI_SPDM_FIRMWARE_BLOB"
	case EvEFISPDMFirmwareConfig:
		return "EV_EFI_SPDM_FIRMWARE_CONFIG"
	case EvTXTPCRMapping:
		return "EVTYPE_PCRMAPPING"
	case EvTXTHashStart:
		return "EVTYPE_HASH_START"
	case EvTXTCombinedHash:
		return "EVTYPE_COMBINED_HASH"
	case EvTXTMLEHash:
		return "EVTYPE_MLE_HASH"
	case EvTXTBIOSACRegData:
		return "EVTYPE_BIOSAC_REG_DATA"
	case EvTXTCPUSCRTMStat:
		return "EVTYPE_CPU_SCRTM_STAT"
	case EvTXTLCPControlHash:
		return "EVTYPE_LCP_CONTROL_HASH"
	case EvTXTElementsHash:
		return "EVTYPE_ELEMENTS_HASH"
	case EvTXTSTMHash:
		return "EVTYPE_STM_HASH"
	case EvTXTOSSinitDataCapHash:
		return "EVTYPE_OSSINITDATA_CAP_HASH"
	case EvTXTSinitPubKeyHash:
		return "EVTYPE_SINIT_PUBKEY_HASH"
	case EvTXTLCPHash:
		return "EVTYPE_LCP_HASH"
	case EvTXTLCPDetailsHash:
		return "EVTYPE_LCP_DETAILS_HASH"
	case EvTXTLCPAuthoritiesHash:
		return "EVTYPE_LCP_AUTHORITIES_HASH"
	case EvTXTNVInfoHash:
		return "EVTYPE_NV_INFO_HASH"
	case EvTXTColdBootBIOSHash:
		return "EVTYPE_COLD_BOOT_BIOS_HASH"
	case EvTXTKMHash:
		return "EVTYPE_KM_HASH"
	case EvTXTBPMHash:
		return "EVTYPE_BPM_HASH"
	case EvTXTKMInfoHash:
		return "EVTYPE_KM_INFO_HASH"
	case EvTXTBPMInfoHash:
		return "EVTYPE_BPM_INFO_HASH"
	case EvTXTBootPolHash:
		return "EVTYPE_BOOT_POL_HASH"
	case EvTXTRandomValue:
		return "EVTYPE_RANDOM_VALUE"
	case EvTXTCapValue:
		return "EVTYPE_CAP_VALUE"
	}
	return fmt.Sprintf("0x%x", t)
}
