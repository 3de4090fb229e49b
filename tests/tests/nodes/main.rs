//! Multi-node tests: real `troupe` processes on loopback or in network
//! namespaces the tests create. One test binary; one module per concern.

// Two nodes on loopback, no mDNS: explicit --peer dialling and the local API's peer list.
mod two_nodes;
// A stranger's batches, sent before any handshake, are refused without being decoded.
mod strangers;
// A device on another version of Troupe: named once, listed, not redialled every few seconds.
mod versions;
// Dialling by address: retried until the peer is up, remembered across restarts.
mod redial;
// The CLI's honest refusals, init, and one daemon per data dir.
mod cli;
// mDNS inside namespaces only, interfaces restricted: members find each other, strangers learn nothing.
mod mdns;
// `troupe demo`: three nodes, a conflict in words, convergence, cleanup.
mod demo;
// An 80 MiB asset: killed receiver, resumed transfer, verified bytes.
mod assets;
// Data crosses between processes: edits, conflicts, chains.
mod sync;
// Conflicts, undo/redo, jobs, history/search, quarantine, GC and export as a person uses them.
mod operations;
// Workspaces as crews live them: isolation, library copies, archive, templates, clone, leave.
mod lifecycle;
// The same on one LAN: namespaces and mDNS, joins on running nodes, isolation in the stores.
mod lifecycle_lan;
// A restored data dir continues as a new incarnation: no sequence number is reused.
mod incarnation;
// Every write the local API answered survives `kill -9` of the node.
mod durability;
// A disk that fills up mid-sync: nobody blamed, reads go on, the sync ends once space is freed.
mod disk_full;
