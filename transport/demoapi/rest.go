package demoapi

import (
	"fmt"
	"hash/crc32"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/batchd/batchd/internal/errcode"
)

// restMethod is one of the REST-style demo methods: it reads the request itself (verb, query, Content-Type).
type restMethod struct {
	verbs  []string
	handle func(a *API, r *http.Request, payload []byte) answer
}

// restMethods answer the way REST APIs do, on the demo's producers, so that `make run` can show a batch's REST
// helpers: Location and status placeholders, links to follow, ok_status, fan-out over a list, text bodies.
var restMethods = map[string]restMethod{
	// POST {"name"}: 201 Created, no body, Location: /v1/Demo/Producer?id=N.
	"Demo/Create": {[]string{http.MethodPost}, (*API).restCreate},
	// GET ?id=N: the producer, with an ETag; DELETE ?id=N: 204. 404 for an unknown id.
	"Demo/Producer": {[]string{http.MethodGet, http.MethodDelete}, (*API).restProducer},
	// GET ?page=P&size=S (from 1; size 1 to 100, default 10): a page of producers by id, with links.next.
	"Demo/Page": {[]string{http.MethodGet}, (*API).restPage},
	// POST application/x-www-form-urlencoded: its fields echoed as a JSON object.
	"Demo/Form": {[]string{http.MethodPost}, (*API).restForm},
}

// serveREST runs a REST demo method.
func (a *API) serveREST(w http.ResponseWriter, r *http.Request, name string, m restMethod) {
	if !slices.Contains(m.verbs, r.Method) {
		w.Header().Set("Allow", strings.Join(m.verbs, ", "))
		write(w, fail(errcode.MethodNotAllowed, name+" accepts "+strings.Join(m.verbs, " and ")+" only"))
		return
	}
	body, err := readPayload(r)
	switch {
	case err == errTooLarge:
		write(w, tooLarge())
	case err != nil:
		write(w, invalid("reading payload: %v", err))
	default:
		write(w, m.handle(a, r, body))
	}
}

func (a *API) restCreate(r *http.Request, body []byte) answer {
	ans := a.producerAdd(r.Context(), body)
	var created struct {
		Result struct {
			NewID int64 `json:"new_id"`
		} `json:"result"`
	}
	if decode(ans.body, &created) != nil || created.Result.NewID == 0 {
		return ans // a validation error, as Producer/Add answers it
	}
	return answer{status: http.StatusCreated,
		header: http.Header{"Location": {"/v1/Demo/Producer?id=" + strconv.FormatInt(created.Result.NewID, 10)}}}
}

func (a *API) restProducer(r *http.Request, _ []byte) answer {
	id, err := strconv.ParseInt(r.URL.Query().Get("id"), 10, 64)
	if err != nil {
		return fail(errcode.NotFound, "no producer: the query must name one, ?id=N")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	p, found := a.producers[id]
	switch {
	case !found:
		return fail(errcode.NotFound, "no producer "+strconv.FormatInt(id, 10))
	case r.Method == http.MethodDelete:
		delete(a.producers, id)
		return answer{status: http.StatusNoContent}
	}
	ans := ok(p)
	ans.header = http.Header{"Etag": {fmt.Sprintf(`"%d-%08x"`, p.ID, crc32.ChecksumIEEE([]byte(p.Name)))}} // changes with the name
	return ans
}

func (a *API) restPage(r *http.Request, _ []byte) answer {
	q := r.URL.Query()
	page, size := atoiOr(q.Get("page"), 1), atoiOr(q.Get("size"), 10)
	if page < 1 || size < 1 || size > 100 {
		return invalid("page must be 1 or more and size from 1 to 100")
	}
	a.mu.RLock()
	ids := make([]int64, 0, len(a.producers))
	for id := range a.producers {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	from := min((page-1)*size, len(ids))
	to := min(from+size, len(ids))
	list := make([]producer, 0, to-from)
	for _, id := range ids[from:to] {
		list = append(list, a.producers[id])
	}
	a.mu.RUnlock()
	next := "null"
	if to < len(ids) {
		next = strconv.Quote("/v1/Demo/Page?page=" + strconv.Itoa(page+1) + "&size=" + strconv.Itoa(size))
	}
	return okWith(list, `,"links":{"next":`+next+`}`)
}

func (a *API) restForm(r *http.Request, body []byte) answer {
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/x-www-form-urlencoded") {
		return invalid("Content-Type must be application/x-www-form-urlencoded, not %q", ct)
	}
	values, err := url.ParseQuery(string(body))
	if err != nil {
		return invalid("malformed form body: %v", err)
	}
	fields := make(map[string]string, len(values))
	for k, v := range values {
		fields[k] = v[0]
	}
	return ok(fields)
}

// atoiOr is s as an integer, or or when it is empty; -1 when it is not a number.
func atoiOr(s string, or int) int {
	if s == "" {
		return or
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return -1
	}
	return n
}
