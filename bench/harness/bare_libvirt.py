"""The inventory benches' baseline: the libvirt calls one host's sync makes (open, host
facts, listAllDomains x3, getAllDomainStats, and with `read_xml` one XMLDesc per domain as
a first sync does), with nothing done to the answers. The baseline must be libvirt itself,
so (only) the benchmarks import it beside the adapter."""

from __future__ import annotations

import libvirt

libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


def bare_libvirt(uri: str, read_xml: bool) -> None:
    conn = libvirt.open(uri)
    try:
        conn.getType(), conn.getLibVersion(), conn.getVersion(), conn.getHostname()
        domains = conn.listAllDomains(0)
        conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_PERSISTENT)
        conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_AUTOSTART)
        conn.getAllDomainStats(
            libvirt.VIR_DOMAIN_STATS_STATE | libvirt.VIR_DOMAIN_STATS_BLOCK,
            libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_BACKING,
        )
        if read_xml:
            for dom in domains:
                dom.XMLDesc(0)
    finally:
        conn.close()
