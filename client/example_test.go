package client_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/batchd/batchd/client"
)

// Create a producer, then read it back by the id the first step returned.
func Example() {
	base, stop := demoBatchd() // a batchd serving its demo API; in a program, e.g. "http://localhost:8080"
	defer stop()

	c, err := client.New(base, client.Config{})
	if err != nil {
		panic(err)
	}
	b := (&client.Batch{}).Add(
		client.Step{Key: "ProducerAdd", Path: "Producer/Add", Payload: map[string]string{"name": "Coca-Cola"}},
		client.Step{Key: "ProducerGet", Path: "Producer/Get", Payload: map[string]any{
			"ids": []string{client.Ref("ProducerAdd", "result", "new_id")}, // becomes the number 1
		}},
	)
	ans, err := c.Run(context.Background(), b)
	if err != nil {
		panic(err)
	}
	get, _ := ans.Result("ProducerGet")
	var body struct {
		Result []struct {
			ID   int    `json:"id"`
			Name string `json:"name"`
		} `json:"result"`
	}
	if err := get.Decode(&body); err != nil {
		panic(err)
	}
	fmt.Println(get.Status, body.Result[0].ID, body.Result[0].Name, "failed:", ans.Failed)
	// Output: 200 1 Coca-Cola failed: 0
}

// A step that fails makes its dependents fail unsent (424); Failed is batchd's own count.
func ExampleAnswer_Failed() {
	base, stop := demoBatchd()
	defer stop()
	c, _ := client.New(base, client.Config{})

	ans, err := c.Run(context.Background(), &client.Batch{Steps: []client.Step{
		{Key: "Check", Path: "Demo/Fail", Payload: map[string]any{"description": "out of stock"}},
		{Key: "Order", Path: "Demo/Echo", DependsOn: []string{"Check"}},
	}})
	if err != nil {
		panic(err)
	}
	for _, r := range ans.Results {
		er, _ := r.ErrorResult()
		fmt.Println(r.Key, r.Status, er.Code, er.Description)
	}
	fmt.Println("failed:", ans.Failed)
	// Output:
	// Check 200 1000 out of stock
	// Order 424 4240 dependency Check failed
	// failed: 2
}

// A refused batch runs nothing; the error lists every problem by step key.
func ExampleError() {
	base, stop := demoBatchd()
	defer stop()
	c, _ := client.New(base, client.Config{})

	_, err := c.RunJSON(context.Background(), []byte(`{"requests": [
		{"key": "a", "path": "https://evil.test/x"},
		{"key": "b", "path": "Producer/Get", "payload": {"ids": ["${nope.result.id}"]}}]}`))
	var refused *client.Error
	if errors.As(err, &refused) {
		fmt.Println(refused.Status, refused.Code)
		for _, p := range refused.Details {
			fmt.Println(p.Key, p.Reason)
		}
	}
	// Output:
	// 400 4000
	// a invalid_path
	// b unknown_ref
}

// A dry run: how batchd would run a batch, level by level, with nothing sent.
func ExampleClient_Plan() {
	base, stop := demoBatchd()
	defer stop()
	c, _ := client.New(base, client.Config{})

	p, err := c.Plan(context.Background(), &client.Batch{Steps: []client.Step{
		{Key: "A", Path: "Producer/Add", Payload: map[string]string{"name": "x"}},
		{Key: "B", Path: "Demo/Echo"},
		{Key: "C", Path: "Producer/Get", Payload: map[string]any{"ids": []string{client.Ref("A", "result", "new_id")}}, DependsOn: []string{"B"}},
	}})
	if err != nil {
		panic(err)
	}
	for level, steps := range p.ByLevel() {
		for _, s := range steps {
			fmt.Println(level, s.Key, s.DependsOn)
		}
	}
	fmt.Println("critical path:", p.CriticalPath)
	// Output:
	// 0 A []
	// 0 B []
	// 1 C [A B]
	// critical path: [A C]
}

// Data from outside the program goes through Literal, so that a "${" in it is never read as a placeholder.
func ExampleLiteral() {
	base, stop := demoBatchd()
	defer stop()
	c, _ := client.New(base, client.Config{})

	name := "Price ${A.result} & co" // e.g. read from a CSV file
	ans, _ := c.Run(context.Background(), &client.Batch{Steps: []client.Step{
		{Key: "Echo", Path: "Demo/Echo", Payload: map[string]string{"name": client.Literal(name)}},
	}})
	fmt.Println(string(ans.Results[0].Response))
	// Output: {"ok":true,"result":{"name":"Price ${A.result} & co"}}
}

// Submit a job of two batches, one per NDJSON line, follow it, and read each batch's answer in line order.
func ExampleClient_SubmitJob() {
	c, err := client.New("http://localhost:8080", client.Config{})
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	lines := `{"requests": [{"key": "a", "path": "Producer/Add", "payload": {"name": "Fanta"}}]}
{"requests": [{"key": "a", "path": "Producer/Add", "payload": {"name": "Sprite"}}]}
`
	job, err := c.SubmitJob(ctx, strings.NewReader(lines), client.IdempotencyKey("import-2026-12-02"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	for r, err := range c.JobResults(ctx, job.ID, true) { // streams until the job ends
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return
		}
		fmt.Println(r.Line, string(r.Answer))
	}
	s, err := c.Job(ctx, job.ID)
	if err == nil {
		fmt.Println(s.Status, s.Batches.Done, "of", s.Batches.Total, "batches,", s.Batches.Failed, "failed")
	}
}
