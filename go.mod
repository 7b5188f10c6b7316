module github.com/airlock-proxy/airlock

go 1.26.8

require (
	github.com/pelletier/go-toml/v2 v2.4.3
	golang.org/x/net v0.62.0
)

require golang.org/x/text v0.43.0 // indirect
