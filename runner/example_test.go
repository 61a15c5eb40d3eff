package runner_test

import (
	"context"
	"fmt"

	"github.com/batchd/batchd/planner"
	"github.com/batchd/batchd/runner"
	"github.com/batchd/batchd/transport"
)

// invokerFunc adapts a function to runner.Invoker.
type invokerFunc func(context.Context, runner.Call) (runner.Response, error)

func (f invokerFunc) Invoke(ctx context.Context, c runner.Call) (runner.Response, error) {
	return f(ctx, c)
}

func ExampleRunner_Run() {
	p, err := planner.Parse([]byte(`{"requests":[
		{"key":"ProducerAdd","path":"Producer/Add","payload":{"name":"Coca-Cola"}},
		{"key":"ProducerGet","path":"Producer/Get","payload":{"ids":["${ProducerAdd.result.new_id}"]}}
	]}`), planner.Config{})
	if err != nil {
		panic(err)
	}
	api := invokerFunc(func(_ context.Context, c runner.Call) (runner.Response, error) {
		switch c.Path {
		case "Producer/Add":
			return runner.Response{Status: 200, Body: []byte(`{"ok":true,"result":{"new_id":4}}`)}, nil
		default:
			fmt.Printf("%s got %s\n", c.Path, c.Body)
			return runner.Response{Status: 200, Body: []byte(`{"ok":false,"result":{"error":1008,"description":"no such producer"}}`)}, nil
		}
	})
	results := runner.New(api, runner.Config{}).Run(context.Background(), p, runner.Options{})
	fmt.Println(string(transport.AppendAnswer(nil, p, results)))
	// Output:
	// Producer/Get got {"ids":[4]}
	// {"responses":[{"key":"ProducerAdd","status":200,"response":{"ok":true,"result":{"new_id":4}}},{"key":"ProducerGet","status":200,"response":{"ok":false,"result":{"error":1008,"description":"no such producer"}}}]}
}
