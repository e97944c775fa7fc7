module github.com/arrowquant/arrowquant

go 1.26.8
