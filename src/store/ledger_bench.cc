// Ledger write throughput: rows/s through LedgerWriter (one producer, callbacks counted) on
// SQLite and on a throwaway PostgreSQL server, and the time of one 1,000-row AppendLedger batch
// on PostgreSQL by multi-row INSERT and by COPY, and one tenant's period spend read from the
// daily totals beside the same sum over its ledger rows.
// Usage: ledger_bench [rows] (default 50000).

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include "store/ledger_writer.h"
#include "store/postgres_options.h"
#include "store/store.h"
#include "testing/postgres_server.h"

namespace {

using namespace powerplane;
using Clock = std::chrono::steady_clock;

store::LedgerRow Row(std::int64_t i) {
  return store::LedgerRow{.request_id = "req-" + std::to_string(i),
                          .tenant = "tenant-" + std::to_string(i % 7),
                          .key_id = "key_0123456789ab",
                          .model = "llama-3.1-8b",
                          .site = i % 2 ? "tx-1" : "de-1",
                          .endpoint = "ep-3",
                          .priority_class = "interactive",
                          .prompt_tokens = 512,
                          .completion_tokens = 128,
                          .start_unix_ms = 1'750'000'000'000 + i,
                          .end_unix_ms = 1'750'000'002'000 + i,
                          .ttft_ms = 180.5,
                          .joules = 231.25,
                          .usd_per_mwh = 41.7,
                          .energy_cost_usd = 2.7e-6,
                          .charged_usd = 0.00042,
                          .outcome = "ok"};
}

bool WriterThroughput(store::Store& s, const char* name, std::int64_t rows) {
  auto writer = store::LedgerWriter::Start(s, 8192);
  if (!writer) return std::fprintf(stderr, "%s\n", writer.error().c_str()), false;
  std::atomic<std::int64_t> durable{0};
  const auto start = Clock::now();
  for (std::int64_t i = 0; i < rows; ++i) {
    while (!(*writer)->TryReserve()) std::this_thread::sleep_for(std::chrono::microseconds(20));
    (*writer)->Commit(Row(i), [&](bool ok) { durable += ok; });
  }
  (*writer)->Stop();
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  const auto c = (*writer)->counters();
  std::printf(
      "%-10s LedgerWriter: %lld rows in %.3f s = %.0f rows/s (%llu batches, %.0f rows/batch)\n",
      name, static_cast<long long>(durable.load()), seconds, durable.load() / seconds,
      static_cast<unsigned long long>(c.batches),
      c.batches ? static_cast<double>(c.rows_written) / c.batches : 0.0);
  return durable.load() == rows;
}

bool BatchTime(store::Store& s, const char* name, std::int64_t first_id, int batches) {
  std::vector<store::LedgerRow> rows;
  double total = 0;
  for (int b = 0; b < batches; ++b) {
    rows.clear();
    for (int i = 0; i < 1000; ++i) rows.push_back(Row(first_id + b * 1000 + i));
    const auto start = Clock::now();
    auto inserted = s.AppendLedger(rows);
    total += std::chrono::duration<double, std::milli>(Clock::now() - start).count();
    if (!inserted || *inserted != rows.size()) {
      return std::fprintf(stderr, "%s\n", inserted ? "short insert" : inserted.error().c_str()),
             false;
    }
  }
  std::printf("%-26s 1,000-row batch: %.2f ms (%.0f rows/s), mean of %d\n", name, total / batches,
              1000.0 * batches / (total / 1000), batches);
  return true;
}

// A budget resync's read: one tenant's spend for its period, from the daily totals
// (ChargedUsd), beside the same sum over the tenant's ledger rows (what ChargedUsd read before
// the totals: Usage sums the same rows through the same index).
bool SpendReadTime(store::Store& s, const char* name, int reps) {
  const std::int64_t since = 1'750'000'000'000 - 1'750'000'000'000 % (24 * 3600 * 1000);
  double totals_ms = 0, ledger_ms = 0, a = 0, b = 0;
  std::int64_t rows = 0;
  for (int r = 0; r < reps; ++r) {
    auto start = Clock::now();
    auto charged = s.ChargedUsd("tenant-0", since);
    totals_ms += std::chrono::duration<double, std::milli>(Clock::now() - start).count();
    start = Clock::now();
    auto summed = s.Usage("tenant-0", since, INT64_MAX, store::UsageGroup::kTenant);
    ledger_ms += std::chrono::duration<double, std::milli>(Clock::now() - start).count();
    if (!charged || !summed || summed->size() != 1) {
      return std::fprintf(stderr, "%s: spend read failed\n", name), false;
    }
    a = *charged;
    b = summed->front().charged_usd;
    rows = summed->front().requests;
  }
  std::printf("%-10s one tenant's period spend (%lld rows): daily totals %.3f ms, ledger rows "
              "%.3f ms (%.0fx), mean of %d; %.6f vs %.6f USD\n",
              name, static_cast<long long>(rows), totals_ms / reps, ledger_ms / reps,
              ledger_ms / totals_ms, reps, a, b);
  return std::abs(a - b) < 1e-6 * std::max(1.0, b);
}

}  // namespace

int main(int argc, char** argv) {
  const std::int64_t rows = argc > 1 ? std::atoll(argv[1]) : 50000;
  const int batches = static_cast<int>(std::max<std::int64_t>(1, rows / 5000));
  std::string templ = (std::filesystem::temp_directory_path() / "pp-ledger-bench-XXXXXX").string();
  if (mkdtemp(templ.data()) == nullptr) return 1;
  bool ok = true;
  {
    auto sqlite = store::Store::Open("", templ);
    if (!sqlite) return std::fprintf(stderr, "%s\n", sqlite.error().c_str()), 1;
    ok &= WriterThroughput(**sqlite, "sqlite", rows);
    ok &= BatchTime(**sqlite, "sqlite AppendLedger", rows, batches);
    ok &= SpendReadTime(**sqlite, "sqlite", 20);
  }
  std::filesystem::remove_all(templ);

  auto server = testing::PostgresServer::Start();
  if (!server) return std::fprintf(stderr, "%s\n", server.error().c_str()), 1;
  auto url = (*server)->CreateDatabase("bench");
  if (!url) return std::fprintf(stderr, "%s\n", url.error().c_str()), 1;
  auto pg = store::Store::Open(*url, "");
  if (!pg) return std::fprintf(stderr, "%s\n", pg.error().c_str()), 1;
  ok &= WriterThroughput(**pg, "postgresql", rows);
  store::SetPostgresLedgerInsert(store::PostgresLedgerInsert::kMultiRowInsert);
  ok &= BatchTime(**pg, "postgresql multi-row INSERT", rows, batches);
  store::SetPostgresLedgerInsert(store::PostgresLedgerInsert::kCopy);
  ok &= BatchTime(**pg, "postgresql COPY + INSERT", rows + 1000 * batches, batches);
  ok &= SpendReadTime(**pg, "postgresql", 20);
  return ok ? 0 : 1;
}
