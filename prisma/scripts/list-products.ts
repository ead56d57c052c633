// An application instance that lists the catalog every INTERVAL_MS milliseconds until its stdin is
// closed: `legacy` is the old application (schema.prisma: its product rows carry category, price
// and stock), `normalized` the new one (schema-normalized.prisma: categories and variants).
// Usage: list-products.ts legacy|normalized [INTERVAL_MS]. Prints "ready" after its first listing,
// and at the end {"listings": N, "errors": [...]}.
import { PrismaClient as LegacyClient } from "../generated/legacy/client.ts";
import { PrismaClient as NormalizedClient } from "../generated/normalized/client.ts";
import { adapter, describe, stopSignal, toJson } from "./db.ts";

const [which, interval = "100"] = process.argv.slice(2);
if (!["legacy", "normalized"].includes(which)) {
  console.error("usage: list-products.ts legacy|normalized [INTERVAL_MS]");
  process.exit(2);
}
const applicationName = `prisma-lister ${which}`;

async function listLegacy(prisma: LegacyClient): Promise<number> {
  const rows = await prisma.product.findMany({ where: { isAvailable: true }, orderBy: [{ rating: "desc" }], take: 20 });
  return rows.length;
}

async function listNormalized(prisma: NormalizedClient): Promise<number> {
  const rows = await prisma.product.findMany({
    where: { isAvailable: true },
    include: { category: true, variants: { where: { isActive: true } } },
    orderBy: [{ rating: "desc" }],
    take: 20,
  });
  return rows.length;
}

const list = which === "legacy"
  ? ((p) => () => listLegacy(p))(new LegacyClient({ adapter: adapter(applicationName, 1) }))
  : ((p) => () => listNormalized(p))(new NormalizedClient({ adapter: adapter(applicationName, 1) }));

let stopping = false;
const stopped = stopSignal().then(() => { stopping = true; });
let listings = 0;
const errors: string[] = [];
while (!stopping) {
  try {
    await list();
    listings += 1;
    if (listings === 1) console.log("ready");
  } catch (error) {
    errors.push(describe(error));
  }
  await Promise.race([stopped, new Promise((r) => setTimeout(r, Number(interval)))]);
}
console.log(toJson({ listings, errors }));
process.exit(0);
