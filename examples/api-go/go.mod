module shoal.dev/examples/api-go

go 1.27
