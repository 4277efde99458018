"""Containers on bridge networks through the engine: names, aliases, isolation, --internal,
published ports, connect/disconnect. Real containers (``pallet run``, runc), real namespaces,
bridges and nftables; every test ends with nothing of its networking left on the host.

Debian's static busybox cannot resolve names through NSS (its ``wget`` segfaults on lookups), so
"fetches by name" is checked two ways: inside the container, ``busybox nslookup NAME`` (which
reads the container's resolv.conf, i.e. queries pallet's DNS responder) gives the address that
``wget`` then fetches; and from the client container's network namespace, the host's curl
resolves the name with glibc through the container's own resolv.conf and /etc/hosts
(bind-mounted over the host's in a private mount namespace) and fetches ``http://NAME/``.
"""

from __future__ import annotations

import re
import subprocess
import urllib.request
from pathlib import Path

from tests.network.conftest import Engine, Namespaces, free_subnet
from tests.support import peers

SERVE = "mkdir -p /www && echo hello-from-{name} > /www/index.html && exec httpd -f -p 80 -h /www"


def serve(engine: Engine, name: str, *flags: str) -> str:
    """Run busybox httpd in container ``name``; returns its id."""
    cid = engine.ok("run", "-d", "--name", name, *flags, "small", "sh", "-c", SERVE.format(name=name)).strip()
    engine.wait_listen(name, 80)
    return cid


def lookup(output: str) -> list[str]:
    """The answer addresses of a ``busybox nslookup`` run (not the server's own address)."""
    addrs, answer = [], False
    for line in output.splitlines():
        if line.startswith("Name:"):
            answer = True
        elif answer and line.startswith("Address"):
            addrs.append(line.split()[-1])
    return addrs


def curl_by_name(engine: Engine, client: str, url: str) -> subprocess.CompletedProcess:
    """The host's curl in ``client``'s network namespace, resolving with the container's own
    resolv.conf and hosts files (glibc's resolver -> pallet's DNS responder)."""
    info = engine.inspect(client)
    script = (
        f"mount --bind {info['ResolvConfPath']} /etc/resolv.conf && "
        f"mount --bind {info['HostsPath']} /etc/hosts && "
        f"exec curl -sS --max-time 5 {url}"
    )
    return subprocess.run(
        ["nsenter", f"--net={info['NetworkSettings']['SandboxKey']}", "unshare", "-m", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_names_aliases_and_isolation_between_networks(engine: Engine) -> None:
    engine.ok("network", "create", "--subnet", free_subnet(), "front")
    engine.ok("network", "create", "--subnet", free_subnet(), "other")
    serve(engine, "web", "--network", "front", "--network-alias", "api")
    web_ip = engine.ip("web", "front")

    # inside a container on the same network: the name and the alias resolve (through its
    # resolv.conf, i.e. the network's responder) to web's address, which serves the page
    out = engine.ok(
        "run",
        "--rm",
        "--network",
        "front",
        "small",
        "sh",
        "-c",
        "busybox nslookup web; echo ---; busybox nslookup api; echo ---; cat /etc/resolv.conf; echo ---; "
        "ip=$(busybox nslookup web | awk '/^Name:/{n=1} n && /^Address/{print $NF}'); "
        "timeout 5 wget -q -O- http://$ip/",
    )
    by_name, by_alias, resolv, page = out.split("---\n")
    assert lookup(by_name) == [web_ip] and lookup(by_alias) == [web_ip]
    gateway = engine.inspect("web")["NetworkSettings"]["Gateway"]
    assert f"nameserver {gateway}" in resolv and "search dns.pallet" in resolv
    assert page == "hello-from-web\n"

    # a name-resolving fetch with a real resolver: curl from a client's namespace, by name and alias
    engine.ok("run", "-d", "--name", "client", "--network", "front", "small", "sleep", "300")
    for name in ("web", "api", "web.dns.pallet"):
        r = curl_by_name(engine, "client", f"http://{name}/")
        assert r.returncode == 0 and r.stdout == "hello-from-web\n", (name, r.stderr)

    # another network: its DNS does not know web, and web's address is unreachable from it;
    # the same container reaches its own network's gateway (so the check can fail)
    out = engine(
        "run",
        "--rm",
        "--network",
        "other",
        "small",
        "sh",
        "-c",
        f"busybox nslookup web; echo ---; timeout 5 wget -q -O- http://{web_ip}/; echo wget=$?; "
        "ping -c1 -W2 $(ip route | awk '/default/{print $3}') >/dev/null; echo ping=$?",
    )
    assert out.rc == 0, out
    nslookup_other, rest = out.out.split("---\n")
    assert lookup(nslookup_other) == []
    assert "hello-from-web" not in rest and "wget=0" not in rest and "ping=0" in rest


def test_internal_network_has_no_way_out(engine: Engine, ns: Namespaces) -> None:
    """A "remote host" (a namespace on a veth to the host, no route back to container subnets)
    serves a page: a container on a normal network reaches it (masquerade), one on an
    --internal network does not, though it still reaches its neighbours."""
    remote, _host_ip, peer_ip = ns.remote(free_subnet())
    ns.httpd(remote, "remote-page")
    engine.ok("network", "create", "--subnet", free_subnet(), "open")
    engine.ok("network", "create", "--internal", "--subnet", free_subnet(), "sealed")
    fetch = f"timeout 5 wget -q -O- http://{peer_ip}/; echo ' rc='$?"
    out = engine.ok("run", "--rm", "--network", "open", "small", "sh", "-c", fetch)
    assert out == "remote-page rc=0\n"
    out = engine.ok("run", "--rm", "small", "sh", "-c", fetch)  # the default network too
    assert out == "remote-page rc=0\n"
    serve(engine, "inner", "--network", "sealed")
    out = engine.ok(
        "run",
        "--rm",
        "--network",
        "sealed",
        "small",
        "sh",
        "-c",
        f"{fetch}; ip route; echo ---; timeout 5 wget -q -O- http://{engine.ip('inner', 'sealed')}/",
    )
    outbound, neighbour = out.split("---\n")
    assert "remote-page" not in outbound and "rc=0" not in outbound
    assert "default" not in outbound, "an internal network has no default route"
    assert neighbour == "hello-from-inner\n"


def test_published_ports_from_the_host_and_other_hosts(engine: Engine, ns: Namespaces) -> None:
    remote, host_ip, _peer = ns.remote(free_subnet())
    fixed = peers.free_port()
    serve(engine, "pub", "-p", f"{fixed}:80", "-p", "80", "-p", "127.0.0.1::80")
    # the host reaches every mapping on 127.0.0.1 (curl, as the issue says) and on its address
    lines = engine.ok("port", "pub").splitlines()
    assert f"80/tcp -> 0.0.0.0:{fixed}" in lines and len(lines) == 3, lines
    ports = [int(line.rsplit(":", 1)[1]) for line in lines]
    for port in ports:
        r = subprocess.run(
            ["curl", "-sS", "--max-time", "5", f"http://127.0.0.1:{port}/"], capture_output=True
        )
        assert r.stdout == b"hello-from-pub\n", (port, r.stderr)
    assert engine.ok("port", "pub", "80/tcp").splitlines() == [line.split(" -> ")[1] for line in lines]
    # another host (the remote namespace) reaches the ports published on every address, not the
    # one published on 127.0.0.1 only
    loopback_only = int(next(line for line in lines if "127.0.0.1" in line).rsplit(":", 1)[1])
    for port in ports:
        r = ns.wget(remote, f"http://{host_ip}:{port}/")
        if port == loopback_only:
            assert r.stdout != "hello-from-pub\n"
        else:
            assert r.stdout == "hello-from-pub\n", (port, r.stderr)
    # ps and inspect show them as docker does
    ps = engine.ok("ps", "--format", "{{.Names}} {{.Ports}}")
    assert f"0.0.0.0:{fixed}->80/tcp" in ps and "127.0.0.1:" in ps
    info = engine.inspect("pub")
    assert {"HostIp": "0.0.0.0", "HostPort": str(fixed)} in info["NetworkSettings"]["Ports"]["80/tcp"]
    assert len(info["NetworkSettings"]["Ports"]["80/tcp"]) == 3
    assert info["HostConfig"]["PortBindings"]["80/tcp"][0] == {"HostIp": "", "HostPort": str(fixed)}
    # the same host port twice is refused at start: the container stays created (as with docker
    # and podman) and holds no network state
    engine.fails(
        "run", "-d", "--name", "dup", "-p", f"{fixed}:80", "small", "true", match="already published"
    )
    assert engine.inspect("dup")["State"]["Status"] == "created"
    assert not (engine.runroot / "netns" / engine.inspect("dup")["Id"]).exists()
    assert not (engine.root / "networks" / "containers" / f"{engine.inspect('dup')['Id']}.json").exists()
    engine.ok("rm", "-f", "pub", "dup")
    # after rm the port is free again: nothing answers, and it can be published anew
    r = subprocess.run(["curl", "-sS", "--max-time", "2", f"http://127.0.0.1:{fixed}/"], capture_output=True)
    assert r.returncode != 0
    serve(engine, "again", "-p", f"{fixed}:80")
    with urllib.request.urlopen(f"http://127.0.0.1:{fixed}/", timeout=5) as resp:
        assert resp.read() == b"hello-from-again\n"


def test_publish_all_exposed_ports(engine: Engine) -> None:
    """-P: the image's EXPOSE (80/tcp, 53/udp, set with umoci) plus --expose, on random ports."""
    cid = engine.ok(
        "run", "-d", "-P", "--expose", "8080", "--name", "pa", "web", "sh", "-c", SERVE.format(name="pa")
    )
    engine.wait_listen("pa", 80)
    lines = engine.ok("port", "pa").splitlines()
    keys = sorted(line.split(" -> ")[0] for line in lines)
    assert keys == ["53/udp", "80/tcp", "8080/tcp"], lines
    port80 = engine.ok("port", "pa", "80").strip().rsplit(":", 1)[1]
    r = subprocess.run(["curl", "-sS", "--max-time", "5", f"http://127.0.0.1:{port80}/"], capture_output=True)
    assert r.stdout == b"hello-from-pa\n"
    info = engine.inspect(cid.strip())
    assert info["HostConfig"]["PublishAllPorts"] is True
    assert set(info["Config"]["ExposedPorts"]) == {"80/tcp", "53/udp", "8080/tcp"}
    r = engine.fails("port", "pa", "81", rc=125, match="no public port")


def test_connect_and_disconnect_a_running_container(engine: Engine) -> None:
    engine.ok("network", "create", "--subnet", free_subnet(), "back")
    serve(engine, "svc")  # on the default network only
    engine.ok("run", "-d", "--name", "peer", "--network", "back", "small", "sleep", "300")
    assert re.findall(r"\beth\d+\b", engine.ok("exec", "svc", "ip", "-o", "link")) == ["eth0"]
    engine.ok("network", "connect", "--alias", "svc-alias", "back", "svc")
    back_ip = engine.ip("svc", "back")
    assert back_ip and back_ip in engine.ok("exec", "svc", "ip", "-4", "-o", "addr", "show", "eth1")
    assert lookup(engine.ok("exec", "peer", "busybox", "nslookup", "svc-alias")) == [back_ip]
    r = curl_by_name(engine, "peer", "http://svc-alias/")
    assert r.stdout == "hello-from-svc\n", r.stderr
    assert engine.ok("network", "inspect", "-f", "{{.Containers}}", "back").count('"name"') == 2
    # connecting twice is refused; disconnect removes the interface and the name
    engine.fails("network", "connect", "back", "svc", match="already connected")
    engine.ok("network", "disconnect", "back", "svc")
    assert re.findall(r"\beth\d+\b", engine.ok("exec", "svc", "ip", "-o", "link")) == ["eth0"]
    r = engine("exec", "peer", "busybox", "nslookup", "svc-alias")
    assert lookup(r.out) == []
    assert "back" not in engine.inspect("svc")["NetworkSettings"]["Networks"]
    engine.fails("network", "disconnect", "back", "svc", rc=125, match="not connected")
    # a stopped container is connected from its next start, as docker does
    engine.ok("stop", "-t", "0", "svc")
    engine.ok("network", "connect", "back", "svc")
    engine.ok("start", "svc")
    engine.wait_listen("svc", 80)
    assert set(engine.inspect("svc")["NetworkSettings"]["Networks"]) == {"pallet", "back"}
    assert engine.ip("svc", "back") in engine.ok("exec", "svc", "ip", "-4", "-o", "addr")


def test_a_renamed_container_answers_to_its_new_name(engine: Engine) -> None:
    """As docker's embedded DNS: after ``rename`` the new name resolves on the container's
    networks and the old one no longer does; aliases stay."""
    engine.ok("network", "create", "--subnet", free_subnet(), "ren")
    engine.ok("run", "-d", "--name", "before", "--network", "ren", "--network-alias", "keep", "small",
              "sleep", "300")
    engine.ok("run", "-d", "--name", "asker", "--network", "ren", "small", "sleep", "300")
    ip = engine.ip("before", "ren")
    assert lookup(engine.ok("exec", "asker", "busybox", "nslookup", "before")) == [ip]
    engine.ok("rename", "before", "after")
    assert lookup(engine.ok("exec", "asker", "busybox", "nslookup", "after")) == [ip]
    assert lookup(engine("exec", "asker", "busybox", "nslookup", "before").out) == []
    assert lookup(engine.ok("exec", "asker", "busybox", "nslookup", "keep")) == [ip]
    # a stopped container renamed keeps the new name when it starts again
    engine.ok("stop", "-t", "0", "after")
    engine.ok("rename", "after", "later")
    engine.ok("start", "later")
    assert lookup(engine.ok("exec", "asker", "busybox", "nslookup", "later")) == [engine.ip("later", "ren")]
    engine.ok("rm", "-f", "later", "asker")
    assert engine.leaks() == []


def test_run_sets_the_network_up_in_its_helper(engine: Engine, tmp_path) -> None:
    """``pallet run`` on a bridge network forks a helper that imports the netlink code while the
    CLI prepares the container, sets the network up, tears it down for ``--rm``, and is gone
    when the CLI returns; with ``--network none`` there is none. A setup failure in the helper
    reaches the CLI as the same error (one line, status 125) and leaves nothing behind."""
    trace = tmp_path / "trace"
    engine.env["PALLET_TRACE"] = str(trace)
    try:
        out = engine.ok("run", "--rm", "small", "sh", "-c", "ip -4 -o addr show eth0")
        assert " inet 10." in out or " inet 172." in out, out
        events = [line.split(" ", 2) for line in trace.read_text().splitlines()]
        cli = next(pid for _, pid, what in events if what.startswith("cli: parsed"))
        setup = {pid for _, pid, what in events if what.startswith("network: set up")}
        teardown = {pid for _, pid, what in events if what.startswith("network: torn down")}
        assert setup and cli not in setup and setup == teardown, events
        assert not Path(f"/proc/{setup.pop()}").exists(), "the helper exited with the run"
        trace.unlink()
        engine.ok("run", "--rm", "--network", "none", "small", "true")
        assert not any("network:" in line for line in trace.read_text().splitlines())
    finally:
        engine.env.pop("PALLET_TRACE", None)
    port = peers.free_port()
    engine.ok("run", "-d", "--name", "holder", "-p", f"{port}:80", "small", "sleep", "300")
    r = engine.fails("run", "--rm", "-p", f"{port}:80", "small", "true", match="already published")
    assert len(r.err.strip().splitlines()) == 1, r.err
    engine.ok("rm", "-f", "holder")
    assert engine.leaks() == []
