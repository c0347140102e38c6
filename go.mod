module github.com/gated-dev/gated

go 1.26.8

require (
	github.com/eclipse/paho.mqtt.golang v1.5.1
	github.com/karalabe/usb v0.0.2
	github.com/makiuchi-d/gozxing v0.1.1
	go.bug.st/serial v1.8.0
	go.etcd.io/bbolt v1.5.0
	gopkg.in/yaml.v3 v3.0.1
)

require (
	github.com/gorilla/websocket v1.5.3 // indirect
	golang.org/x/net v0.44.0 // indirect
	golang.org/x/sync v0.20.0 // indirect
	golang.org/x/sys v0.45.0 // indirect
	golang.org/x/text v0.29.0 // indirect
	golang.org/x/xerrors v0.0.0-20200804184101-5ec99f83aff1 // indirect
)
