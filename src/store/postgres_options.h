#pragma once
// How the PostgreSQL backend writes ledger batches. Process-wide; for benchmarks and tests.

namespace powerplane::store {

enum class PostgresLedgerInsert {
  // INSERT ... VALUES (...),(...) ON CONFLICT DO NOTHING, 1,000 rows a statement.
  kMultiRowInsert,
  // The default, about twice as fast for 1,000-row batches (see README.md): COPY into a
  // temporary table, then INSERT ... SELECT ... ON CONFLICT DO NOTHING.
  kCopy,
};

void SetPostgresLedgerInsert(PostgresLedgerInsert mode);

}  // namespace powerplane::store
