#pragma once
// How the PostgreSQL backend writes ledger batches. Process-wide; for benchmarks and tests.

namespace powerplane::store {

enum class PostgresLedgerInsert {
  kMultiRowInsert,  // INSERT ... VALUES (...),(...) ON CONFLICT DO NOTHING, 1,000 rows a statement.
  kCopy,            // COPY into a temporary table, then INSERT ... SELECT ON CONFLICT DO NOTHING.
};

void SetPostgresLedgerInsert(PostgresLedgerInsert mode);

}  // namespace powerplane::store
