module github.com/batchd/batchd

go 1.26.8
