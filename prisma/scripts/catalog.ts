// The guide's Phase 3 and Phase 4 catalog queries, as a Prisma application on the normalized names
// runs them, on the client given as first argument (`migrating`: schema-migrating.prisma, during the
// migration; `normalized`: schema-normalized.prisma, valid in both phases), for the category slug
// given as second argument. Prints {"phase3": [...], "phase4": [...], "listing": [...]}:
//   phase3   the guide's Phase 3 query as written (every product of the category, every variant);
//   phase4   the guide's Phase 4 query as written (available products, active variants, by rating
//            and order count; ties in no defined order);
//   listing  Phase 4 as the shop's GET /api/products?category= answers it: the ties broken by id
//            and only the products that have an active variant to sell.
import { PrismaClient as MigratingClient } from "../generated/migrating/client.ts";
import { PrismaClient as NormalizedClient } from "../generated/normalized/client.ts";
import { adapter, toJson } from "./db.ts";

const [which, categorySlug] = process.argv.slice(2);
if (!["migrating", "normalized"].includes(which) || !categorySlug) {
  console.error("usage: catalog.ts migrating|normalized CATEGORY_SLUG");
  process.exit(2);
}
// The two schemas have the same models, relations and normalized fields: one query text fits both.
const prisma = (which === "migrating"
  ? new MigratingClient({ adapter: adapter(`prisma-catalog ${which}`) })
  : new NormalizedClient({ adapter: adapter(`prisma-catalog ${which}`) })) as unknown as NormalizedClient;

// Phase 3, "New normalized query".
const phase3 = await prisma.product.findMany({
  where: {
    category: {
      slug: categorySlug,
    },
  },
  include: {
    category: true,
    variants: true,
    shop: {
      include: {
        address: true,
      },
    },
  },
});

// Phase 4, getCachedProducts(categorySlug) without its cache.
const phase4 = await prisma.product.findMany({
  where: {
    category: { slug: categorySlug },
    isAvailable: true,
  },
  include: {
    variants: {
      where: { isActive: true },
      orderBy: { sortOrder: "asc" },
    },
    shop: {
      select: {
        id: true,
        name: true,
        rating: true,
      },
    },
  },
  orderBy: [
    { rating: "desc" },
    { orderCount: "desc" },
  ],
});

// The listing the shop serves: Phase 4 with a total order and nothing unsellable.
const listing = await prisma.product.findMany({
  where: {
    category: { slug: categorySlug },
    isAvailable: true,
    variants: { some: { isActive: true } },
  },
  include: {
    category: true,
    variants: {
      where: { isActive: true },
      orderBy: [{ sortOrder: "asc" }, { id: "asc" }],
    },
    shop: {
      select: {
        id: true,
        name: true,
        rating: true,
      },
    },
  },
  orderBy: [
    { rating: "desc" },
    { orderCount: "desc" },
    { id: "asc" },
  ],
});

console.log(toJson({ phase3, phase4, listing }));
await prisma.$disconnect();
