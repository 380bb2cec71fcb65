// pause: the real node's sandbox image process. It holds the pod's namespaces
// and exits on SIGTERM or SIGINT (containerd's sandbox_image, e2e/README.md).
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
	<-c
}
