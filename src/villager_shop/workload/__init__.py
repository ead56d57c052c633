"""Application workloads that write to the shop's database while it changes: the old application
(legacy columns) and the new one (normalized tables). The demo, the rehearsal and the benchmarks run
them to show that a migration neither blocks nor loses an application's writes."""
