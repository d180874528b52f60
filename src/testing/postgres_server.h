#pragma once
// A throwaway PostgreSQL server for tests: initdb into a temporary directory, started on a free
// loopback port with its socket in that directory, stopped (immediate mode) and deleted when the
// object dies. Needs the server binaries (/usr/lib/postgresql/<version>/bin, from scripts/setup).
// Run as root, the server runs as the "postgres" user (initdb refuses root). Every wait is
// bounded. Not thread-safe.

#include <expected>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

namespace powerplane::testing {

class PostgresServer {
 public:
  // Starts a server, or says why it could not (binaries missing, initdb or start failed: the
  // server log is included).
  static std::expected<std::unique_ptr<PostgresServer>, std::string> Start();
  ~PostgresServer();

  PostgresServer(const PostgresServer&) = delete;
  PostgresServer& operator=(const PostgresServer&) = delete;

  // Creates database `name` and returns its URL: postgresql://postgres@127.0.0.1:PORT/NAME.
  std::expected<std::string, std::string> CreateDatabase(std::string_view name);
  unsigned short port() const { return port_; }

 private:
  PostgresServer() = default;
  void Stop();

  std::filesystem::path bin_dir_;
  std::filesystem::path dir_;  // holds data/, the socket and server.log.
  unsigned short port_ = 0;
  bool running_ = false;
};

}  // namespace powerplane::testing
