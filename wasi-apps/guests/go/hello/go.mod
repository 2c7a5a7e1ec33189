module wasimoff.example/hello-go

go 1.21
