// The new application on the normalized client (schema-normalized.prisma), as it runs from the end
// of `villager-shop migrate run` through `complete` and after: it creates a shopkeeper with an
// address, a shop, a category, a product with its default variant and one more, an order whose item
// names the variant it bought, and reads it all back through the relations the guide's Phase 3 uses.
// Prints what it read as JSON.
//
// Written for both phases: while migrated, the sync triggers give a product created with a base
// price its default variant (and keep the legacy price, which is NOT NULL, equal to it); after
// `complete` nothing does, so the application creates the default variant when there is none.
import { randomUUID } from "node:crypto";
import { PrismaClient } from "../generated/normalized/client.ts";
import { adapter, toJson } from "./db.ts";

const prisma = new PrismaClient({ adapter: adapter("prisma normalized app") });
const tag = randomUUID().slice(0, 8).toUpperCase();
const house = `N-${tag}`; // already in its canonical form (docs/migration-rules.md)

const owner = await prisma.user.create({
  data: { name: `owner ${tag}`, email: `${tag}@normalized.app`, role: "shopkeeper",
          address: { connectOrCreate: { where: { houseNumber: house }, create: { houseNumber: house } } } },
});
const shop = await prisma.shop.create({
  data: { name: `shop ${tag}`, owner: { connect: { id: owner.id } }, address: { connect: { houseNumber: house } } },
});
const category = await prisma.productCategory.create({ data: { name: `Lamps ${tag}`, slug: `lamps-${tag.toLowerCase()}` } });
const product = await prisma.product.create({
  data: { name: `lamp ${tag}`, basePrice: "250.00", shop: { connect: { id: shop.id } }, category: { connect: { id: category.id } } },
});
const existing = await prisma.productVariant.findFirst({ where: { productId: product.id, isDefault: true } });
if (existing) {
  await prisma.productVariant.update({ where: { id: existing.id }, data: { stock: 4 } });
} else {
  await prisma.productVariant.create({
    data: { productId: product.id, sku: `${tag}-default`, name: "Default", price: "250.00", stock: 4, isDefault: true },
  });
}
const brass = await prisma.productVariant.create({
  data: { productId: product.id, sku: `${tag}-brass`, name: "Brass", price: "320.00", stock: 2, sortOrder: 1 },
});
const order = await prisma.$transaction(async (tx) => {
  const variant = await tx.productVariant.update({ where: { id: brass.id }, data: { stock: { decrement: 1 } } });
  return tx.order.create({
    data: {
      customer: { connect: { id: owner.id } }, shop: { connect: { id: shop.id } }, subtotal: variant.price, deliveryFee: "0",
      total: variant.price,
      items: { create: [{ product: { connect: { id: product.id } }, variant: { connect: { id: variant.id } },
                          quantity: 1, unitPrice: variant.price }] },
    },
    include: { items: { include: { variant: true } } },
  });
});
const listed = await prisma.product.findMany({
  where: { category: { slug: category.slug } },
  include: { category: true, variants: { orderBy: { sortOrder: "asc" } }, shop: { include: { address: true } } },
});
console.log(toJson({ order, listed }));
await prisma.$disconnect();
