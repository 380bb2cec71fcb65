"""The real node `real-0`: a kubelet, containerd, CNI, CoreDNS and kube-proxy (stdlib only).

`e2e/cluster up --real-node` starts the control plane bound to the CNI bridge's
gateway address (so pods reach the API server, the test operator's ingest and
the cluster DNS there), then this node beside the kwok nodes. Everything lives
under the cluster's state dir, except containerd's content store, which is kept
in the cache so a large image is imported once, not at every `up`. The node is
tainted (`trialforge.io/real-node`), so only pods that tolerate it run real
containers; everything else stays on kwok.

Network: the pods get addresses in POD_CIDR on the bridge BRIDGE, inside network
namespaces that containerd creates on this machine. A mangle-table chain drops every
packet that would be forwarded between the bridge and any other interface, no
masquerading is set up, containerd's registry traffic goes to a proxy address on
loopback that refuses it, and CoreDNS answers only cluster names: nothing a pod
does leaves the machine. `down` removes every process, mount, namespace, link
and rule this module made, and restores the sysctls it or the kubelet changed.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import tfcluster as tc

NODE_NAME = "real-0"
BRIDGE = "tf0"
POD_CIDR = "10.244.0.0/24"
GATEWAY = "10.244.0.1"  # the bridge's address: API server, cluster DNS, the host as pods see it
SERVICE_IP = "10.0.0.1"  # the `kubernetes` Service (kube-apiserver's default service range)
TAINT_KEY = "trialforge.io/real-node"
TOLERATION = {"key": TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}
FILTER_CHAIN = "TF-REAL-NODE"
# the kubelet sets these (its "kernel defaults"); kube-proxy may too; `down` restores them
SYSCTLS = (
    "net/ipv4/ip_forward",
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
    "net/ipv4/conf/all/route_localnet",
    "net/bridge/bridge-nf-call-iptables",
)
COMPONENTS = ("containerd", "coredns", "kubelet", "kube-proxy")
LOCAL_IMAGES = {tc.PAUSE_IMAGE: tc.pause_image, tc.BUSYBOX_IMAGE: tc.busybox_image}


def run(*cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise tc.ClusterError(f"{' '.join(cmd[:4])} failed: {proc.stderr.strip()[-800:]}")
    return proc


def containerd_root() -> Path:
    """Images and snapshots, kept between `up`s (a 6 GB trainer is imported once)."""
    return tc.cache_root() / "node" / "containerd"


def read_sysctl(name: str) -> str | None:
    try:
        return Path("/proc/sys", name).read_text().strip()
    except OSError:
        return None


def write_sysctl(name: str, value: str) -> None:
    with contextlib.suppress(OSError):
        Path("/proc/sys", name).write_text(value + "\n")


def mounts_under(paths: list[Path]) -> list[str]:
    """Mount points below any of `paths`, deepest first."""
    out: list[str] = []
    prefixes = [str(p.resolve()) for p in paths]
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")
        if any(point == p or point.startswith(p + "/") for p in prefixes):
            out.append(point)
    return sorted(set(out), key=lambda p: -p.count("/"))


def netns_names() -> set[str]:
    d = Path("/var/run/netns")
    return {p.name for p in d.iterdir()} if d.is_dir() else set()


@dataclass
class RealNode:
    """The node's files under `<cluster state>/node`, and its life."""

    cluster: tc.Cluster

    @property
    def dir(self) -> Path:
        return self.cluster.state_dir / "node"

    @property
    def socket(self) -> Path:
        return self.dir / "containerd" / "containerd.sock"

    @property
    def ca(self) -> Path:
        return self.cluster.cluster_dir / "pki" / "ca.crt"

    # -- configuration -----------------------------------------------------

    def _write_configs(self, ports: dict[str, int]) -> None:
        d = self.dir
        for sub in ("containerd", "kubelet", "kube-proxy", "coredns", "net.d", "logs", "certs"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        cni_bin = tc.tool_dir(next(t for t in tc.TOOLSET if t.name == "cni")) / "bin"
        (d / "containerd" / "config.toml").write_text(
            f"""\
version = 2
root = "{containerd_root()}"
state = "{d / "containerd" / "state"}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{self.socket}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d / "containerd" / "opt"}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{tc.PAUSE_IMAGE}"
  # the sandbox lacks CAP_SYS_RESOURCE: runc may not lower oom_score_adj
  restrict_oom_score_adj = true
  disable_apparmor = true
  max_container_log_line_size = 65536
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{d / "net.d"}"
    max_conf_num = 1
"""
        )
        (d / "net.d" / "10-trialforge.conflist").write_text(
            json.dumps(
                {
                    "cniVersion": "1.0.0",
                    "name": "trialforge",
                    "plugins": [
                        {
                            "type": "bridge",
                            "bridge": BRIDGE,
                            "isGateway": True,
                            "ipMasq": False,  # nothing is translated to leave the machine
                            "hairpinMode": True,
                            "ipam": {
                                "type": "host-local",
                                "ranges": [[{"subnet": POD_CIDR, "gateway": GATEWAY}]],
                                "routes": [{"dst": "0.0.0.0/0"}],
                                "dataDir": str(d / "cni-ipam"),
                            },
                        },
                        {"type": "portmap", "capabilities": {"portMappings": True}},
                    ],
                },
                indent=2,
            )
        )
        (d / "resolv.conf").write_text("# no upstream: only cluster names resolve in pods\n")
        kubeconfig = self.cluster.kubeconfig
        (d / "kubelet" / "config.yaml").write_text(
            f"""\
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://{self.socket}
address: {GATEWAY}
port: {ports["kubelet"]}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: {ports["kubelet-healthz"]}
authentication:
  anonymous: {{enabled: true}}
  webhook: {{enabled: false}}
  x509: {{clientCAFile: {self.ca}}}
authorization: {{mode: AlwaysAllow}}
clusterDomain: cluster.local
clusterDNS: [{GATEWAY}]
resolvConf: {d / "resolv.conf"}
failSwapOn: false
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {{memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%,
  nodefs.inodesFree: 1%}}
registerWithTaints: [{{key: {TAINT_KEY}, value: "true", effect: NoSchedule}}]
maxPods: 60
shutdownGracePeriod: 0s
"""
        )
        (d / "kube-proxy" / "config.yaml").write_text(
            f"""\
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {{kubeconfig: {kubeconfig}}}
hostnameOverride: {NODE_NAME}
bindAddress: {GATEWAY}
healthzBindAddress: 127.0.0.1:{ports["kube-proxy-healthz"]}
metricsBindAddress: 127.0.0.1:{ports["kube-proxy-metrics"]}
mode: iptables
clusterCIDR: {POD_CIDR}
# without this a pod reaching a Service backed by a pod on the same bridge gets
# the reply straight from that pod, which its conntrack does not expect
iptables: {{masqueradeAll: true}}
conntrack: {{maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}}
nodePortAddresses: [{GATEWAY}/32]
"""
        )
        (d / "coredns" / "Corefile").write_text(
            f"""\
.:53 {{
    bind {GATEWAY}
    errors
    ready 127.0.0.1:{ports["coredns-ready"]}
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    # no `forward`: names outside the cluster are not sent anywhere
}}
"""
        )

    # -- network -----------------------------------------------------------

    @staticmethod
    def create_bridge() -> None:
        """The bridge and its gateway address, before the API server binds there."""
        if run("ip", "link", "show", BRIDGE, check=False).returncode != 0:
            run("ip", "link", "add", BRIDGE, "type", "bridge")
        addrs = run("ip", "-o", "-4", "addr", "show", "dev", BRIDGE).stdout
        if f" {GATEWAY}/" not in addrs:
            run("ip", "addr", "add", f"{GATEWAY}/24", "dev", BRIDGE)
        run("ip", "link", "set", BRIDGE, "up")

    @staticmethod
    def _fence() -> None:
        """Drop whatever would be forwarded between the bridge and another interface.

        In the mangle table's FORWARD, which the kernel walks before the filter
        table's and which neither kube-proxy nor CNI touch: kube-proxy inserts its
        ACCEPTs (conntrack, marked Service traffic) at the top of filter FORWARD
        whenever it syncs, so a rule there would not stay first."""
        ipt = ("iptables", "-w", "-t", "mangle")
        run(*ipt, "-N", FILTER_CHAIN, check=False)
        run(*ipt, "-F", FILTER_CHAIN)
        run(*ipt, "-A", FILTER_CHAIN, "-i", BRIDGE, "!", "-o", BRIDGE, "-j", "DROP")
        run(*ipt, "-A", FILTER_CHAIN, "-o", BRIDGE, "!", "-i", BRIDGE, "-j", "DROP")
        while run(*ipt, "-D", "FORWARD", "-j", FILTER_CHAIN, check=False).returncode == 0:
            pass
        run(*ipt, "-I", "FORWARD", "1", "-j", FILTER_CHAIN)

    @staticmethod
    def fence_apiserver(port: int) -> None:
        """The API server listens on every address (it must on the bridge's too):
        only loopback and the bridge may reach its port."""
        chain = FILTER_CHAIN + "-IN"
        run("iptables", "-w", "-N", chain, check=False)
        run("iptables", "-w", "-F", chain)
        run("iptables", "-w", "-A", chain, "-i", "lo", "-j", "RETURN")
        run("iptables", "-w", "-A", chain, "-i", BRIDGE, "-j", "RETURN")
        run("iptables", "-w", "-A", chain, "-j", "DROP")
        jump = ["INPUT", "-p", "tcp", "--dport", str(port), "-j", chain]
        if run("iptables", "-w", "-C", *jump, check=False).returncode:
            run("iptables", "-w", "-I", *jump[:1], "1", *jump[1:])

    @staticmethod
    def _unfence_all() -> None:
        """Remove every rule and chain of ours, kube-proxy's, the kubelet's and CNI's."""
        for tool in ("iptables", "ip6tables"):
            saved = run(f"{tool}-save", check=False)
            if saved.returncode != 0:
                continue
            marks = (FILTER_CHAIN, "KUBE-", "CNI-")
            kept = [ln for ln in saved.stdout.splitlines() if not any(m in ln for m in marks)]
            if len(kept) != len(saved.stdout.splitlines()):
                subprocess.run(
                    [f"{tool}-restore", "-w"],
                    input="\n".join(kept) + "\n",
                    text=True,
                    capture_output=True,
                    timeout=60,
                )

    # -- lifecycle ---------------------------------------------------------

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> None:
        logf = open(self.dir / "logs" / f"{name}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            env=env or dict(os.environ),
        )
        logf.close()
        st = self.cluster.read_state()
        st.setdefault("node_pids", {})[name] = {
            "pid": proc.pid,
            "start": tc.pid_start_time(proc.pid),
            "cmd": " ".join(cmd),
        }
        self.cluster.write_state(st)

    def _alive(self, name: str) -> bool:
        info = self.cluster.read_state().get("node_pids", {}).get(name)
        return bool(info) and tc.pid_alive(info["pid"])

    def _wait(
        self, what: str, ok: Callable[[], bool], deadline: float, components: tuple[str, ...]
    ) -> None:
        while not ok():
            dead = [c for c in components if not self._alive(c)]
            if dead:
                raise tc.ClusterError(f"{', '.join(dead)} exited while waiting for {what}")
            if time.monotonic() > deadline:
                raise tc.ClusterError(f"timed out waiting for {what}")
            time.sleep(0.3)

    def up(self, wait: float = 180) -> float:
        """Start containerd, CoreDNS, the kubelet and kube-proxy; wait for a Ready node."""
        t0 = time.monotonic()
        deadline = t0 + wait
        bins = tc.bin_dir()
        self.create_bridge()
        st = self.cluster.read_state()
        st["node_sysctls"] = {k: v for k in SYSCTLS if (v := read_sysctl(k)) is not None}
        st["node_netns_before"] = sorted(netns_names())
        self.cluster.write_state(st)
        ports = {
            k: tc.free_port()
            for k in (
                "kubelet-healthz",
                "kube-proxy-healthz",
                "kube-proxy-metrics",
                "coredns-ready",
            )
        }
        ports["kubelet"] = tc.free_port(GATEWAY)
        self._write_configs(ports)
        containerd_root().mkdir(parents=True, exist_ok=True)
        write_sysctl("net/ipv4/ip_forward", "1")  # a pod reaching a pod through a Service
        self._fence()
        # registry traffic goes to a loopback port that refuses it: no pull leaves the machine
        proxy = "http://127.0.0.1:9"
        env = dict(os.environ, HTTP_PROXY=proxy, HTTPS_PROXY=proxy, NO_PROXY="")
        env.pop("http_proxy", None)
        env.pop("https_proxy", None)
        self._spawn(
            "containerd",
            ["containerd", "--config", str(self.dir / "containerd" / "config.toml")],
            env,
        )
        self._wait(
            "containerd",
            lambda: (
                run("ctr", "--address", str(self.socket), "version", check=False).returncode == 0
            ),
            deadline,
            ("containerd",),
        )
        for ref, make in LOCAL_IMAGES.items():
            tc.containerd_load_image(str(self.socket), make(), ref)
        self._spawn(
            "coredns", [str(bins / "coredns"), "-conf", str(self.dir / "coredns" / "Corefile")]
        )
        self._spawn(
            "kubelet",
            [
                str(bins / "kubelet"),
                f"--config={self.dir / 'kubelet' / 'config.yaml'}",
                f"--kubeconfig={self.cluster.kubeconfig}",
                f"--root-dir={self.dir / 'kubelet' / 'root'}",
                f"--cert-dir={self.dir / 'certs'}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={GATEWAY}",
                "--node-labels=type=real",
                "--v=1",
            ],
        )
        self._spawn(
            "kube-proxy",
            [str(bins / "kube-proxy"), f"--config={self.dir / 'kube-proxy' / 'config.yaml'}"],
        )
        self._wait("node real-0 Ready", self.ready, deadline, COMPONENTS)
        self._wait(
            "CoreDNS ready",
            lambda: self._http_ok(ports["coredns-ready"], "/ready"),
            deadline,
            COMPONENTS,
        )
        self._wait(
            "kube-proxy healthy",
            lambda: self._http_ok(ports["kube-proxy-healthz"], "/healthz"),
            deadline,
            COMPONENTS,
        )
        st = self.cluster.read_state()
        st["node"] = {
            "name": NODE_NAME,
            "address": GATEWAY,
            "up_seconds": round(time.monotonic() - t0, 2),
        }
        self.cluster.write_state(st)
        return time.monotonic() - t0

    @staticmethod
    def _http_ok(port: int, path: str) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def ready(self) -> bool:
        proc = self.cluster.kubectl(
            "get",
            "node",
            NODE_NAME,
            "-o",
            "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
            check=False,
            timeout=10,
        )
        return proc.returncode == 0 and proc.stdout.strip() == "True"

    def load_image(self, tar: Path, name: str | None = None) -> str:
        return tc.containerd_load_image(str(self.socket), tar, name)

    def down(self) -> list[str]:
        """Stop the node and remove what it made; returns what could not be removed."""
        st = self.cluster.read_state()
        api = self.cluster.kubeconfig.is_file() and (
            self.cluster.kubectl("get", "--raw", "/readyz", check=False, timeout=5).returncode == 0
        )
        if api and self._alive("kubelet"):
            # let the kubelet stop the pods itself: sandboxes, CNI DEL, netns, volumes
            self.cluster.kubectl("cordon", NODE_NAME, check=False)
            self.cluster.kubectl(
                "delete",
                "pods",
                "-A",
                f"--field-selector=spec.nodeName={NODE_NAME}",
                "--grace-period=1",
                "--wait=false",
                check=False,
            )
            t_end = time.monotonic() + 30
            while time.monotonic() < t_end and self._tasks():
                time.sleep(0.5)
        pids = st.get("node_pids", {})
        for name in ("kube-proxy", "kubelet", "coredns"):
            info = pids.get(name)
            if info:
                tc.kill_pids({info["pid"]: info["start"]})
        if self._alive("containerd"):
            for task in self._tasks():
                self._ctr("tasks", "kill", "-s", "SIGKILL", task)
            time.sleep(0.5)
            for task in self._tasks():
                self._ctr("tasks", "delete", "-f", task)
            for c in self._ctr("containers", "ls", "-q").stdout.split():
                self._ctr("containers", "delete", c)
        info = pids.get("containerd")
        if info:
            tc.kill_pids({info["pid"]: info["start"]})
        # shims outlive containerd; ours name our socket
        for p in Path("/proc").iterdir():
            if p.name.isdigit() and str(self.socket) in tc.pid_cmdline(int(p.name)):
                tc.kill_pids({int(p.name): tc.pid_start_time(int(p.name))}, grace=2)
        bins = tc.bin_dir()
        if (bins / "kube-proxy").exists():
            run(str(bins / "kube-proxy"), "--cleanup", check=False)
        for point in mounts_under([self.dir, containerd_root()]):
            run("umount", "-l", point, check=False)
        before = set(st.get("node_netns_before", []))
        for ns in netns_names() - before:
            if ns.startswith("cni-"):
                run("ip", "netns", "delete", ns, check=False)
        links = run("ip", "-o", "link", "show", "master", BRIDGE, check=False).stdout
        for line in links.splitlines():
            run("ip", "link", "delete", line.split(":")[1].strip().split("@")[0], check=False)
        run("ip", "link", "delete", BRIDGE, check=False)
        self._unfence_all()
        for k, v in st.get("node_sysctls", {}).items():
            if read_sysctl(k) != v:
                write_sysctl(k, v)
        st = self.cluster.read_state()
        for k in ("node_pids", "node", "node_sysctls", "node_netns_before"):
            st.pop(k, None)
        self.cluster.write_state(st)
        return self.leftovers(before)

    def _ctr(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run("ctr", "--address", str(self.socket), "-n", "k8s.io", *args, check=False)

    def _tasks(self) -> list[str]:
        out = self._ctr("tasks", "ls", "-q")
        return out.stdout.split() if out.returncode == 0 else []

    def leftovers(self, netns_before: set[str] | None = None) -> list[str]:
        """What the node left behind: processes, mounts, namespaces, links, rules."""
        left: list[str] = []
        for p in Path("/proc").iterdir():
            if p.name.isdigit() and int(p.name) != os.getpid():
                cmd = tc.pid_cmdline(int(p.name))
                if str(self.dir) in cmd or str(self.socket) in cmd:
                    left.append(f"process {p.name}: {cmd[:120]}")
        left += [f"mount {m}" for m in mounts_under([self.dir, containerd_root()])]
        left += [
            f"netns {n}" for n in netns_names() - (netns_before or set()) if n.startswith("cni-")
        ]
        if run("ip", "link", "show", BRIDGE, check=False).returncode == 0:
            left.append(f"link {BRIDGE}")
        left += [
            f"veth {ln.split(':')[1].strip()}"
            for ln in run(
                "ip", "-o", "link", "show", "type", "veth", check=False
            ).stdout.splitlines()
        ]
        saved = run("iptables-save", check=False).stdout
        left += [f"rule {ln}" for ln in saved.splitlines() if FILTER_CHAIN in ln or "KUBE-" in ln]
        return left
