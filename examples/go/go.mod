module go-example

go 1.19
