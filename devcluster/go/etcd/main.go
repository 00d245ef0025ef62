// Command etcd is etcd's own server entry point, built from its published module. etcd's modules
// carry replace directives, so `go install go.etcd.io/etcd/server/v3` does not work; this small
// main module does.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
