module {{name}}

// 1.24 brought //go:wasmexport and -buildmode=c-shared for wasip1.
go 1.24
