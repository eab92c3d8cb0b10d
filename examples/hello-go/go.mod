module shoal.dev/examples/hello-go

go 1.27
