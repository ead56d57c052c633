// The Prisma CLI's configuration (Prisma 7). The schema is the one of the phase the application is
// in (docs/application-switch.md): `--schema schema-migrating.prisma` or `schema-normalized.prisma`
// on the command line overrides this default. DATABASE_URL is read only by the commands that
// connect (migrate, db); generate and validate run without it.
import { defineConfig } from "prisma/config";

export default defineConfig({
  schema: "schema.prisma",
  migrations: {
    path: "migrations",
  },
  datasource: {
    url: process.env.DATABASE_URL ?? "",
  },
});
