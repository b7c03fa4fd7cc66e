// Command controlplane runs the pieces of a real Kubernetes control plane for klutch-health's tests:
// an embedded etcd, kube-apiserver, kube-controller-manager and kube-scheduler, all built from Kubernetes'
// own Go modules at the release pinned in go.mod. Each runs as its own process (a component's command
// cannot start twice in one process, and the tests stop one without the other); one binary keeps the build
// and the link to one. Test infrastructure only: never part of the product or its image.
//
//	controlplane etcd --data-dir DIR --client-port N --peer-port M [--ready-file F]
//	controlplane apiserver [kube-apiserver flags...]
//	controlplane controller-manager [kube-controller-manager flags...]
//	controlplane scheduler [kube-scheduler flags...]
//	controlplane compact --etcd http://127.0.0.1:N
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
)

const usage = `usage:
  controlplane etcd --data-dir DIR --client-port N --peer-port M [--ready-file FILE]
  controlplane apiserver [kube-apiserver flags...]
  controlplane controller-manager [kube-controller-manager flags...]
  controlplane scheduler [kube-scheduler flags...]
  controlplane compact --etcd http://127.0.0.1:N
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	go exitWithParent()
	switch os.Args[1] {
	case "etcd":
		os.Exit(runEtcd(os.Args[2:]))
	case "apiserver":
		// Each component exactly as its own main runs it, with the remaining arguments as its flags.
		os.Exit(run(app.NewAPIServerCommand()))
	case "controller-manager":
		os.Exit(run(controllermanager.NewControllerManagerCommand()))
	case "scheduler":
		os.Exit(run(scheduler.NewSchedulerCommand()))
	case "compact":
		os.Exit(runCompact(os.Args[2:]))
	default:
		fmt.Fprintf(os.Stderr, "unknown subcommand %q\n%s", os.Args[1], usage)
		os.Exit(2)
	}
}

// run runs a component's command with the arguments after the subcommand as its flags.
func run(command *cobra.Command) int {
	command.SetArgs(os.Args[2:])
	return cli.Run(command)
}

// exitWithParent ends this process once the one that started it is gone (it is then re-parented), so that a
// test binary that exits or is killed never leaves an etcd or kube-apiserver behind.
func exitWithParent() {
	parent := os.Getppid()
	for range time.Tick(500 * time.Millisecond) {
		if os.Getppid() != parent {
			fmt.Fprintf(os.Stderr, "controlplane: parent %d is gone; exiting\n", parent)
			os.Exit(1)
		}
	}
}

// runEtcd serves one etcd member on loopback until SIGTERM or SIGINT. The ports are given (not chosen here)
// so that a restart on the same data directory keeps the address kube-apiserver was told.
func runEtcd(args []string) int {
	fs := flag.NewFlagSet("etcd", flag.ContinueOnError)
	dataDir := fs.String("data-dir", "", "data directory (created if missing; reused on restart)")
	clientPort := fs.Int("client-port", 0, "loopback port for clients")
	peerPort := fs.Int("peer-port", 0, "loopback port for peers (a single member, but etcd needs one)")
	readyFile := fs.String("ready-file", "", "written with the client URL once etcd serves")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *dataDir == "" || *clientPort == 0 || *peerPort == 0 {
		fmt.Fprintf(os.Stderr, "etcd: --data-dir, --client-port and --peer-port are required\n%s", usage)
		return 2
	}
	loopback := func(port int) url.URL {
		return url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
	}
	cfg := embed.NewConfig()
	cfg.Dir = *dataDir
	cfg.UnsafeNoFsync = true // tests: durability across a power cut is not what they measure
	cfg.ListenClientUrls = []url.URL{loopback(*clientPort)}
	cfg.AdvertiseClientUrls = cfg.ListenClientUrls
	cfg.ListenPeerUrls = []url.URL{loopback(*peerPort)}
	cfg.AdvertisePeerUrls = cfg.ListenPeerUrls
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.LogLevel = "warn"
	if err := os.MkdirAll(*dataDir, 0o700); err != nil {
		fmt.Fprintf(os.Stderr, "etcd: cannot create data directory %s: %v\n", *dataDir, err)
		return 1
	}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "etcd: cannot start on %s: %v\n", cfg.ListenClientUrls[0].String(), err)
		return 1
	}
	defer e.Close()
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(60 * time.Second):
		fmt.Fprintln(os.Stderr, "etcd: not ready within 60s")
		return 1
	}
	client := cfg.AdvertiseClientUrls[0].String()
	if *readyFile != "" {
		if err := writeAtomically(*readyFile, client); err != nil {
			fmt.Fprintf(os.Stderr, "etcd: cannot write ready file: %v\n", err)
			return 1
		}
	}
	fmt.Printf("etcd ready at %s\n", client)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-stop:
		return 0
	case err := <-e.Err():
		fmt.Fprintf(os.Stderr, "etcd: %v\n", err)
		return 1
	}
}

// runCompact compacts etcd's history up to its current revision, as kube-apiserver does every 5 minutes:
// a watch resumed from an older resourceVersion then gets 410 Gone.
func runCompact(args []string) int {
	fs := flag.NewFlagSet("compact", flag.ContinueOnError)
	endpoint := fs.String("etcd", "", "etcd client URL")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *endpoint == "" {
		fmt.Fprintf(os.Stderr, "compact: --etcd is required\n%s", usage)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client, err := clientv3.New(clientv3.Config{Endpoints: []string{*endpoint}, DialTimeout: 10 * time.Second})
	if err != nil {
		fmt.Fprintf(os.Stderr, "compact: cannot reach etcd at %s: %v\n", *endpoint, err)
		return 1
	}
	defer client.Close()
	resp, err := client.Get(ctx, "compact-revision-probe")
	if err != nil {
		fmt.Fprintf(os.Stderr, "compact: cannot read the revision of %s: %v\n", *endpoint, err)
		return 1
	}
	revision := resp.Header.Revision
	if _, err := client.Compact(ctx, revision, clientv3.WithCompactPhysical()); err != nil {
		fmt.Fprintf(os.Stderr, "compact: cannot compact %s at revision %d: %v\n", *endpoint, revision, err)
		return 1
	}
	fmt.Printf("compacted at revision %d\n", revision)
	return 0
}

// writeAtomically writes text to path through a temporary file, so that a reader never sees half of it.
func writeAtomically(path, text string) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if _, err := io.WriteString(f, text); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
