#include "testing/postgres_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

extern char** environ;

namespace powerplane::testing {
namespace {

namespace fs = std::filesystem;
using std::chrono::steady_clock;

// The newest /usr/lib/postgresql/<version>/bin holding initdb and pg_ctl.
fs::path FindBinDir() {
  fs::path best;
  int best_version = -1;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/usr/lib/postgresql", ec)) {
    const int version = std::atoi(entry.path().filename().c_str());
    const fs::path bin = entry.path() / "bin";
    if (version > best_version && fs::exists(bin / "initdb") && fs::exists(bin / "pg_ctl")) {
      best = bin;
      best_version = version;
    }
  }
  return best;
}

// Runs argv (as postgres when running as root and `as_postgres`), in the directory of `log`,
// output appended to `log`; waits at most `timeout`, then kills it. Returns the exit status, or -1
// on spawn failure or timeout.
int Run(std::vector<std::string> argv, const fs::path& log, std::chrono::seconds timeout,
        bool as_postgres) {
  if (as_postgres && geteuid() == 0) {
    argv.insert(argv.begin(), {"runuser", "-u", "postgres", "--"});
  }
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  // The server user may not be able to enter the caller's directory.
  posix_spawn_file_actions_addchdir_np(&actions, log.parent_path().c_str());
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  pid_t pid = 0;
  const int rc = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return -1;
  const auto deadline = steady_clock::now() + timeout;
  for (;;) {
    int status = 0;
    const pid_t done = waitpid(pid, &status, WNOHANG);
    if (done == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    if (done < 0) return -1;
    if (steady_clock::now() > deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

unsigned short FreeLoopbackPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  unsigned short port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  close(fd);
  return port;
}

// True while `pid` runs. A stopped postmaster may linger as a zombie when the container's init
// does not reap it; that counts as gone.
bool Alive(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return false;
  const auto paren = line.rfind(')');
  return paren != std::string::npos && paren + 2 < line.size() && line[paren + 2] != 'Z';
}

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

std::expected<std::unique_ptr<PostgresServer>, std::string> PostgresServer::Start() {
  auto server = std::unique_ptr<PostgresServer>(new PostgresServer());
  server->bin_dir_ = FindBinDir();
  if (server->bin_dir_.empty()) {
    return std::unexpected(
        "PostgreSQL server binaries (initdb, pg_ctl) not found under /usr/lib/postgresql/*/bin: "
        "run scripts/setup (Debian package postgresql)");
  }
  std::string templ = (fs::temp_directory_path() / "pp-postgres-XXXXXX").string();
  if (mkdtemp(templ.data()) == nullptr) return std::unexpected("mkdtemp failed");
  server->dir_ = templ;
  if (geteuid() == 0) {
    const passwd* pw = getpwnam("postgres");
    if (pw == nullptr) return std::unexpected("running as root but there is no 'postgres' user");
    if (chown(templ.c_str(), pw->pw_uid, pw->pw_gid) != 0) return std::unexpected("chown failed");
  }
  const fs::path log = server->dir_ / "server.log";
  { std::ofstream touch(log); }
  if (geteuid() == 0) {
    const passwd* pw = getpwnam("postgres");
    if (chown(log.c_str(), pw->pw_uid, pw->pw_gid) != 0) return std::unexpected("chown failed");
  }
  const std::string data = (server->dir_ / "data").string();
  if (Run({(server->bin_dir_ / "initdb").string(), "-D", data, "-U", "postgres", "-A", "trust",
           "-E", "UTF8", "--locale=C", "--no-sync"},
          log, std::chrono::seconds(60), true) != 0) {
    return std::unexpected("initdb failed:\n" + ReadFile(log));
  }
  // The port is free when probed but may be taken before the server binds it: try a few.
  for (int attempt = 0; attempt < 3 && !server->running_; ++attempt) {
    server->port_ = FreeLoopbackPort();
    const std::string options = "-p " + std::to_string(server->port_) + " -k " +
                                server->dir_.string() + " -c listen_addresses=127.0.0.1";
    server->running_ = Run({(server->bin_dir_ / "pg_ctl").string(), "-D", data, "-l", log.string(),
                            "-w", "-t", "20", "-o", options, "start"},
                           log, std::chrono::seconds(30), true) == 0;
  }
  if (!server->running_) return std::unexpected("pg_ctl start failed:\n" + ReadFile(log));
  return server;
}

std::expected<std::string, std::string> PostgresServer::CreateDatabase(std::string_view name) {
  const fs::path log = dir_ / "createdb.log";
  if (Run({(bin_dir_ / "createdb").string(), "-h", "127.0.0.1", "-p", std::to_string(port_), "-U",
           "postgres", std::string(name)},
          log, std::chrono::seconds(30), false) != 0) {
    return std::unexpected("createdb " + std::string(name) + " failed:\n" + ReadFile(log));
  }
  return "postgresql://postgres@127.0.0.1:" + std::to_string(port_) + "/" + std::string(name);
}

void PostgresServer::Stop() {
  if (!running_) return;
  running_ = false;
  const fs::path data = dir_ / "data";
  // The postmaster's PID, to make sure it is gone even if pg_ctl cannot stop it.
  pid_t pid = 0;
  {
    std::ifstream pidfile(data / "postmaster.pid");
    pidfile >> pid;
  }
  const int stopped = Run({(bin_dir_ / "pg_ctl").string(), "-D", data.string(), "-m", "immediate",
                           "-w", "-t", "10", "stop"},
                          dir_ / "stop.log", std::chrono::seconds(15), true);
  if (stopped != 0 && pid > 0) {
    const auto deadline = steady_clock::now() + std::chrono::seconds(5);
    while (Alive(pid) && steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (Alive(pid)) kill(pid, SIGKILL);
  }
}

PostgresServer::~PostgresServer() {
  Stop();
  std::error_code ec;
  if (!dir_.empty()) fs::remove_all(dir_, ec);
}

}  // namespace powerplane::testing
