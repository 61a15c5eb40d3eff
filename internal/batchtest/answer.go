package batchtest

import "encoding/json"

// Answer is a batch answer in the canonical form as a client decodes it (README "Responses", with the members of the
// opt-in extensions): the canonical answer, with the atomic and timing members. Pointers are nil when a member is
// absent.
type Answer struct {
	Responses []struct {
		Key            string          `json:"key"`
		Status         int             `json:"status"`
		Response       json.RawMessage `json:"response"`
		RolledBack     *bool           `json:"rolled_back"`
		RollbackStatus int             `json:"rollback_status"`
		Timing         *struct {
			Queued   float64  `json:"queued_ms"`
			Started  *float64 `json:"started_ms"`
			Duration *float64 `json:"duration_ms"`
		} `json:"timing"`
	} `json:"responses"`
	CriticalPath *float64 `json:"critical_path_ms"`
	Atomic       *struct {
		Committed        bool `json:"committed"`
		RollbackFailures []struct {
			Key      string          `json:"key"`
			Status   int             `json:"status"`
			Response json.RawMessage `json:"response"`
		} `json:"rollback_failures"`
	} `json:"atomic"`
}
