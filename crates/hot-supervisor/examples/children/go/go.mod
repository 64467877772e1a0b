module example.com/supervisor-child

go 1.19
