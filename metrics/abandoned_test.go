package metrics_test

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/batchd/batchd/metrics"
)

func TestBatchAbandoned(t *testing.T) {
	m, reg := newMetrics(t)
	// The series exists at zero before the first abandoned batch, so increase() sees the first one.
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP batchd_batches_abandoned_total Accepted batches whose client went away before the answer: steps not yet started were not started, running ones were cancelled, and no answer was written.
# TYPE batchd_batches_abandoned_total counter
batchd_batches_abandoned_total 0
`), "batchd_batches_abandoned_total"))
	m.BatchAbandoned()
	m.BatchAbandoned()
	assert.Equal(t, 2.0, counterValue(t, reg, "batchd_batches_abandoned_total"))

	problems, err := testutil.GatherAndLint(reg, "batchd_batches_abandoned_total")
	require.NoError(t, err)
	assert.Empty(t, problems)

	var nilM *metrics.Metrics
	nilM.BatchAbandoned() // no-op
}
