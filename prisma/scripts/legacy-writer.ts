// The old application, written with the legacy Prisma client (schema.prisma): it knows only the
// legacy columns (house_number, category, price, stock) and keeps writing them while
// `villager-shop migrate run` or `rollback` changes the database under it. Creates, updates,
// upserts, deleteMany, and orders with their items created and changed in interactive transactions.
//
// Usage: legacy-writer.ts [WORKERS] [TAG]. Prints "ready" once every worker has written, then writes
// until its stdin is closed, and prints one JSON report: operations by kind, every error, and the
// last committed value of every row it wrote (what the caller checks in the database).
import { randomUUID } from "node:crypto";
import { PrismaClient, Prisma } from "../generated/legacy/client.ts";
import { adapter, describe, stopSignal, toJson } from "./db.ts";

const workers = Number(process.argv[2] ?? 3);
const tag = process.argv[3] ?? "writer";
const prisma = new PrismaClient({ adapter: adapter(`legacy-prisma-writer ${tag}`, workers + 1) });

const HOUSES = ["{n}a", " {n}A ", "{n} A", "{n}B", "{n}", "  {n}c", "", null];
const CATEGORIES = ["Grocery", "grocery ", "Fruits & Veg", "मिठाई", "Home  Decor", "home decor", "Snacks!!", null, ""];
const PRICES = ["12.50", "99.00", "45.25", "15.00", "120.00", "33.30"];

type Row = Record<string, unknown>;
const expected: Record<string, Record<string, Row>> = { users: {}, shops: {}, products: {}, orders: {}, order_items: {} };
const byKind: Record<string, number> = {};
const errors: string[] = [];
let ops = 0;
let stopping = false;

function pick<T>(items: readonly T[]): T {
  return items[Math.floor(Math.random() * items.length)];
}

function house(): string | null {
  const spelling = pick(HOUSES);
  return spelling === null ? null : spelling.replace("{n}", String(1 + Math.floor(Math.random() * 300)));
}

class Worker {
  users: string[] = [];
  shops: string[] = [];
  products: string[] = [];
  ordered = new Set<string>();
  orders: string[] = [];

  async createUser(): Promise<void> {
    const id = randomUUID();
    const houseNumber = house();
    await prisma.user.create({ data: { id, name: `prisma ${tag} ${id.slice(0, 8)}`, email: `${id}@prisma.writer`, houseNumber } });
    this.users.push(id);
    expected.users[id] = { house_number: houseNumber };
  }

  async createShop(): Promise<void> {
    if (!this.users.length) return this.createUser();
    const houseNumber = house();
    const shop = await prisma.shop.create({
      data: { owner: { connect: { id: pick(this.users) } }, name: `prisma shop ${tag}`, houseNumber, rating: "4.0" },
    });
    this.shops.push(shop.id);
    expected.shops[shop.id] = { house_number: houseNumber };
  }

  async updateHouse(): Promise<void> {
    const houseNumber = house();
    if (this.shops.length && Math.random() < 0.5) {
      const id = pick(this.shops);
      await prisma.shop.update({ where: { id }, data: { houseNumber } });
      expected.shops[id] = { house_number: houseNumber };
    } else if (this.users.length) {
      const id = pick(this.users);
      await prisma.user.update({ where: { id }, data: { houseNumber } });
      expected.users[id] = { house_number: houseNumber };
    }
  }

  async createProduct(): Promise<void> {
    if (!this.shops.length) return this.createShop();
    const data = { shopId: pick(this.shops), name: `prisma product ${tag}`, category: pick(CATEGORIES), price: pick(PRICES),
                   stock: Math.floor(Math.random() * 40) };
    const p = await prisma.product.create({ data });
    this.products.push(p.id);
    expected.products[p.id] = { category: data.category, price: data.price, stock: data.stock };
  }

  async updateProduct(): Promise<void> {
    if (!this.products.length) return this.createProduct();
    const id = pick(this.products);
    const r = Math.random();
    const data = r < 0.35 ? { price: pick(PRICES) } : r < 0.7 ? { stock: { increment: 1 + Math.floor(Math.random() * 5) } }
      : { category: pick(CATEGORIES) };
    const p = await prisma.product.update({ where: { id }, data });
    expected.products[id] = { category: p.category, price: p.price.toFixed(2), stock: p.stock };
  }

  async upsertProduct(): Promise<void> {
    if (!this.shops.length) return this.createShop();
    const existing = this.products.length && Math.random() < 0.5;
    const id = existing ? pick(this.products) : randomUUID();
    const price = pick(PRICES);
    const stock = Math.floor(Math.random() * 30);
    const category = pick(CATEGORIES);
    const p = await prisma.product.upsert({
      where: { id },
      update: { price, stock },
      create: { id, shopId: pick(this.shops), name: `prisma upserted ${tag}`, category, price, stock },
    });
    if (!existing) this.products.push(id);
    expected.products[id] = { category: p.category, price: p.price.toFixed(2), stock: p.stock };
  }

  async deleteProducts(): Promise<void> {
    const candidates = this.products.filter((id) => !this.ordered.has(id)).slice(-10);
    if (candidates.length < 3) return this.createProduct();
    const ids = candidates.slice(0, 2);
    const { count } = await prisma.product.deleteMany({ where: { id: { in: ids } } });
    if (count !== ids.length) throw new Error(`deleteMany removed ${count} of ${ids.length} products`);
    this.products = this.products.filter((id) => !ids.includes(id));
    for (const id of ids) expected.products[id] = { deleted: true };
  }

  async createOrder(): Promise<void> {
    if (!this.products.length || !this.users.length) return this.createProduct();
    const productId = pick(this.products);
    const customerId = pick(this.users);
    const quantity = 1 + Math.floor(Math.random() * 3);
    const order = await prisma.$transaction(async (tx) => {
      const p = await tx.product.findUniqueOrThrow({ where: { id: productId }, select: { price: true, shopId: true, stock: true } });
      const subtotal = p.price.mul(quantity);
      const created = await tx.order.create({
        data: {
          customerId, shopId: p.shopId, subtotal, deliveryFee: new Prisma.Decimal("10.00"), total: subtotal.add(10),
          items: { create: [{ productId, quantity, unitPrice: p.price }] },
        },
        include: { items: true },
      });
      const after = await tx.product.update({
        where: { id: productId },
        data: { orderCount: { increment: 1 }, ...(p.stock >= quantity ? { stock: { decrement: quantity } } : {}) },
      });
      return { created, after };
    });
    this.orders.push(order.created.id);
    this.ordered.add(productId);
    expected.orders[order.created.id] = { status: "pending", total: order.created.total.toFixed(2) };
    for (const item of order.created.items) {
      expected.order_items[item.id] = { product_id: productId, quantity };
    }
    const a = order.after;
    expected.products[productId] = { category: a.category, price: a.price.toFixed(2), stock: a.stock };
  }

  async confirmOrder(): Promise<void> {
    if (!this.orders.length) return this.createOrder();
    const id = pick(this.orders);
    const quantity = 1 + Math.floor(Math.random() * 5);
    const order = await prisma.$transaction(async (tx) => {
      return tx.order.update({
        where: { id },
        data: { status: "confirmed", items: { updateMany: { where: { orderId: id }, data: { quantity } } } },
        include: { items: true },
      });
    });
    expected.orders[id] = { status: order.status, total: order.total.toFixed(2) };
    for (const item of order.items) {
      expected.order_items[item.id] = { product_id: item.productId, quantity: item.quantity };
    }
  }

  async deleteOrder(): Promise<void> {
    if (this.orders.length < 5) return this.createOrder();
    const id = this.orders.splice(Math.floor(Math.random() * this.orders.length), 1)[0];
    const items = await prisma.$transaction(async (tx) => {
      const gone = await tx.orderItem.findMany({ where: { orderId: id }, select: { id: true } });
      await tx.orderItem.deleteMany({ where: { orderId: id } });
      await tx.order.delete({ where: { id } });
      return gone;
    });
    expected.orders[id] = { deleted: true };
    for (const item of items) expected.order_items[item.id] = { deleted: true };
  }
}

const OPERATIONS = ["createUser", "createShop", "updateHouse", "updateHouse", "createProduct", "createProduct",
                    "updateProduct", "updateProduct", "upsertProduct", "deleteProducts", "createOrder", "createOrder",
                    "confirmOrder", "deleteOrder"] as const;

async function run(worker: Worker, started: () => void): Promise<void> {
  await worker.createUser();
  await worker.createShop();
  await worker.createProduct();
  started();
  while (!stopping) {
    const op = pick(OPERATIONS);
    try {
      await worker[op]();
    } catch (error) {
      errors.push(`${op}: ${describe(error)}`);
    }
    ops += 1;
    byKind[op] = (byKind[op] ?? 0) + 1;
    await new Promise((r) => setTimeout(r, 2));
  }
}

let ready = 0;
const stopped = stopSignal().then(() => { stopping = true; });
const loops = Array.from({ length: workers }, () => run(new Worker(), () => {
  ready += 1;
  if (ready === workers) console.log("ready");
}));
await stopped;
await Promise.all(loops);
await prisma.$disconnect();
console.log(toJson({ ops, by_kind: byKind, errors, expected }));
