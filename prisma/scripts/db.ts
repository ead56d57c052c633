// What every script shares: the driver adapter on DATABASE_URL (Prisma 7 runs without engine
// binaries: the query compiler is in the client, pg does the talking), a JSON form of Prisma's
// values, and a stop signal: the caller closes our stdin.
import { PrismaPg } from "@prisma/adapter-pg";

export function adapter(applicationName: string, max = 4): PrismaPg {
  const connectionString = process.env.DATABASE_URL;
  if (!connectionString) {
    throw new Error("DATABASE_URL is not set");
  }
  return new PrismaPg({ connectionString, max, application_name: applicationName });
}

/** Decimal as its exact text, BigInt as a number's text, Date as ISO 8601. */
export function toJson(value: unknown): string {
  return JSON.stringify(value, (_key, v) => (typeof v === "bigint" ? v.toString() : v));
}

/** Resolves when the caller closes our stdin (or sends SIGTERM). */
export function stopSignal(): Promise<void> {
  return new Promise((resolve) => {
    process.stdin.on("end", () => resolve());
    process.stdin.on("close", () => resolve());
    process.on("SIGTERM", () => resolve());
    process.stdin.resume();
  });
}

/** The last meaningful line of an error: Prisma's messages start with the call site. */
export function describe(error: unknown): string {
  const e = error as { code?: string; message?: string };
  const lines = String(e?.message ?? error).split("\n").map((l) => l.trim()).filter(Boolean);
  return `${e?.code ?? (error as Error)?.name ?? "Error"}: ${lines.slice(-2).join(" ").slice(0, 400)}`;
}
