// Command etcd is upstream's etcd server (etcdmain), built from
// go.etcd.io/etcd/server/v3 for trustpool's tests.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
