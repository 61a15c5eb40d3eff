package jsonscan

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const doc = `{
	"ok": true,
	"result": {"new_id": 4, "name": "Coca-Cola", "tags": ["a", "b"], "empty": {}, "none": [],
		"k\u00e9": 1, "list": [{"id": 10}, {"id": 11, "deep": [[7]]}]},
	"ok": false
}`

func TestDocLookup(t *testing.T) {
	d := NewDoc([]byte(doc), nil)
	for path, want := range map[string]string{
		"":                       doc,
		"ok":                     "true", // duplicate names: the first wins
		"result.new_id":          "4",
		"result.name":            `"Coca-Cola"`,
		"result.tags":            `["a", "b"]`,
		"result.tags.1":          `"b"`,
		"result.empty":           `{}`,
		"result.none":            `[]`,
		"result.ké":              "1",
		"result.list.1.deep":     `[[7]]`,
		"result.list.1.deep.0.0": "7",
	} {
		got, err := d.Lookup(path)
		require.NoError(t, err, path)
		assert.Equal(t, want, string(got), path)
	}
	for path, want := range map[string]LookupError{
		"nope":            {Reason: ReasonNoMember, Seg: "nope"},
		"result.nope":     {Reason: ReasonNoMember, Seg: "nope", Walked: 7},
		"result.tags.2":   {Reason: ReasonOutOfRange, Seg: "2", Walked: 12, Length: 2},
		"result.tags.x":   {Reason: ReasonNotIndex, Seg: "x", Walked: 12},
		"result.tags.01":  {Reason: ReasonNotIndex, Seg: "01", Walked: 12},
		"result.none.0":   {Reason: ReasonOutOfRange, Seg: "0", Walked: 12},
		"result.empty.a":  {Reason: ReasonNoMember, Seg: "a", Walked: 13},
		"result.new_id.x": {Reason: ReasonNotContainer, Seg: "x", Walked: 14, Kind: '0'},
		"result.name.0":   {Reason: ReasonNotContainer, Seg: "0", Walked: 12, Kind: '"'},
	} {
		_, err := d.Lookup(path)
		var le *LookupError
		require.ErrorAs(t, err, &le, path)
		assert.Equal(t, want, *le, path)
	}
	for _, bad := range []string{``, `  `, `{"a":`, `[1,]`, `{"a" 1}`, `nul`, `{"a":1`, `{"a":"\x"}`} {
		_, err := NewDoc([]byte(bad), nil).Lookup("a")
		assert.Error(t, err, "%q", bad)
	}
}

// TestDocIndexesEachContainerOnce: once lookups have walked through every container, more lookups through them,
// from any number of goroutines, index nothing more: the charge, told of every growth of the index, hears nothing.
func TestDocIndexesEachContainerOnce(t *testing.T) {
	var b strings.Builder
	b.WriteString(`{"result":{`)
	for i := range 100 {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `"m%d":{"id":%d}`, i, i)
	}
	b.WriteString("}}")
	var mu sync.Mutex
	charged := int64(0)
	d := NewDoc([]byte(b.String()), func(n int64) error {
		mu.Lock()
		charged += n
		mu.Unlock()
		return nil
	})
	lookups := func(goroutines int) {
		var wg sync.WaitGroup
		for g := range goroutines {
			wg.Go(func() {
				for i := range 100 {
					got, err := d.Lookup(fmt.Sprintf("result.m%d.id", (i+g)%100))
					if err != nil || string(got) != fmt.Sprint((i+g)%100) {
						t.Errorf("m%d: %s %v", (i+g)%100, got, err)
					}
				}
			})
		}
		wg.Wait()
	}
	lookups(1)
	first := charged
	// The members of the top object (1 + its end), "result" (100 + 1) and m0…m99 (2 each): 304 members, in an
	// index grown by doubling, plus the name map of "result".
	assert.Greater(t, first, int64(304*memberSize))
	assert.Less(t, first, int64(2*304*memberSize+100*64))
	lookups(8)
	assert.Equal(t, first, charged, "nothing indexed twice")
}

// TestDocChargeRefused: a lookup that needs an index its charge refuses fails with the charge's error.
func TestDocChargeRefused(t *testing.T) {
	full := errors.New("over budget")
	_, err := NewDoc([]byte(doc), func(int64) error { return full }).Lookup("result.new_id")
	require.ErrorIs(t, err, full)
	var le *LookupError
	require.ErrorAs(t, err, &le)
	assert.Equal(t, ReasonCharge, le.Reason)
}

func TestDocDepthLimit(t *testing.T) {
	ok := strings.Repeat("[", MaxDepth) + strings.Repeat("]", MaxDepth)
	_, err := NewDoc([]byte(ok), nil).Lookup("")
	assert.NoError(t, err)
	tooDeep := "[" + ok + "]"
	_, err = NewDoc([]byte(tooDeep), nil).Lookup("")
	assert.Error(t, err)
	path := strings.TrimSuffix(strings.Repeat("0.", MaxDepth-1), ".")
	got, err := NewDoc([]byte(ok), nil).Lookup(path)
	require.NoError(t, err)
	assert.Equal(t, "[]", string(got))
}

// FuzzDocLookup: on any bytes and path, Lookup ends without panicking; what it finds is a valid JSON value, found
// again by a fresh Doc and by the same Doc a second time (its index gives what a scan gave).
func FuzzDocLookup(f *testing.F) {
	f.Add([]byte(doc), "result.list.1.deep.0.0")
	f.Add([]byte(`{"a":[1,{"b":"c"}],"a":2}`), "a.1.b")
	f.Add([]byte(`[[[]]]`), "0.0")
	f.Add([]byte(`{"\u00e9":1,"\ud800":2}`), "é")
	f.Fuzz(func(t *testing.T, b []byte, path string) {
		d := NewDoc(b, nil)
		got, err := d.Lookup(path)
		if err != nil {
			return
		}
		if !jsontext.Value(got).IsValid(jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true)) {
			t.Fatalf("%q at %q: %q is not a JSON value", b, path, got)
		}
		again, err := d.Lookup(path)
		fresh, ferr := NewDoc(b, nil).Lookup(path)
		if err != nil || ferr != nil || string(again) != string(got) || string(fresh) != string(got) {
			t.Fatalf("%q at %q: %q, then %q (%v), fresh %q (%v)", b, path, got, again, err, fresh, ferr)
		}
	})
}
