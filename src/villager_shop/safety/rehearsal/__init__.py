"""Staging rehearsal: the whole online migration on a restored copy of production, under a live
workload, judged GO or NO-GO before anyone touches the live database.

Why this shape (the guide's "Test migration on staging environment" is `createdb` + `psql <
backup_*.sql` and then nothing measured): here the rehearsal
1. restores a manifest backup (checksum proven, row counts checked) into `<db>_staging_<ts>` on the
   same server - a name that is checked to differ from the live database and to carry the staging
   suffix, because that database is dropped WITH (FORCE) at the end - or where VILLAGER_SCRATCH_URL
   says when the role may not create databases (safety.scratch);
2. runs exactly what production will run (`runner.run`) while the LiveWriter plays the old and the
   new application against staging, recording every write's latency;
3. verifies (row-by-row equivalence, every write of the writer present), compares performance
   baselines and query plans before and after, lints the plan's SQL with squawk;
4. projects the production duration from the measured rates and production's row counts, and lists
   every reason for a NO-GO.
Production is only read: its row estimates, and the backup taken when the manifest has none.

`run` goes through those in order; `staging` names, fills and drops the copy; `timeline`,
`latency`, `quarantine`, `catalog`, `baselines` and `squawk` each measure one thing; `judge`
projects the duration and gives the verdict. The report itself (model and files) is
safety.report, which knows nothing of the rehearsal.
"""
