#include "gateway/shared_buckets.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sys/mman.h>

#include <atomic>
#include <fstream>

namespace powerplane::gateway {
namespace {

class SharedBucketsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string templ = (std::filesystem::temp_directory_path() / "pp-buckets-XXXXXX").string();
    ASSERT_NE(::mkdtemp(templ.data()), nullptr);
    dir_ = templ;
    file_ = dir_ / "rate-limits";
  }
  void TearDown() override {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
  std::unique_ptr<SharedBuckets> Open() {
    auto table = SharedBuckets::Open(file_);
    EXPECT_TRUE(table) << table.error();
    return table ? std::move(*table) : nullptr;
  }
  // Takes one request from `table` at time `now_s`: true when admitted.
  static bool TakeOne(SharedBuckets& table, const SharedBuckets::Limits& limits, double now_s) {
    bool admitted = false;
    EXPECT_TRUE(table.With(limits, [&](core::MinuteBucket& rpm, core::MinuteBucket&) {
      admitted = rpm.TryTake(1, now_s) == 0;
    }));
    return admitted;
  }
  std::filesystem::path dir_, file_;
};

// Two openings of one file are two processes' views of one table (a shared mapping each): what
// one takes, the other cannot take again, and tenants do not share a bucket.
TEST_F(SharedBucketsTest, OpeningsOfOneFileTakeFromTheSameBuckets) {
  auto a = Open(), b = Open();
  ASSERT_TRUE(a && b);
  const SharedBuckets::Limits acme{"acme", 3, 0, 1};
  EXPECT_TRUE(TakeOne(*a, acme, 100.0));
  EXPECT_TRUE(TakeOne(*b, acme, 100.0));
  EXPECT_TRUE(TakeOne(*a, acme, 100.0));
  EXPECT_FALSE(TakeOne(*b, acme, 100.0));
  EXPECT_FALSE(TakeOne(*a, acme, 100.0));
  EXPECT_TRUE(TakeOne(*b, {"globex", 1, 0, 1}, 100.0));
  EXPECT_TRUE(TakeOne(*a, acme, 120.0));  // refilled at 3 a minute: one more after 20 s.
  // The buckets outlive the openings (a restarted process finds them).
  a.reset();
  b.reset();
  auto c = Open();
  ASSERT_TRUE(c);
  EXPECT_FALSE(TakeOne(*c, acme, 120.0));
}

// The openings of one table are one domain for limits shared through the store: they do not
// charge each other for what they took (core/fleet_usage.h); another table is another domain.
TEST_F(SharedBucketsTest, OpeningsOfOneFileAreOneDomain) {
  auto a = Open(), b = Open();
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->domain(), b->domain());
  EXPECT_FALSE(a->domain().empty());
  auto other = SharedBuckets::Open(dir_ / "other-limits");
  ASSERT_TRUE(other) << other.error();
  EXPECT_NE((*other)->domain(), a->domain());
}

// A changed limit makes a fresh bucket only for a view at least as new as the bucket's: a process
// that has not reloaded yet does not refill it back.
TEST_F(SharedBucketsTest, OnlyANewerViewOfALimitResizesTheBucket) {
  auto table = Open();
  ASSERT_TRUE(table);
  EXPECT_TRUE(TakeOne(*table, {"acme", 1, 0, 5}, 10.0));
  EXPECT_FALSE(TakeOne(*table, {"acme", 1, 0, 5}, 10.0));
  // Raised to 2 at version 6: the one taken still counts, so one more is left (not two).
  EXPECT_TRUE(TakeOne(*table, {"acme", 2, 0, 6}, 10.0));
  // A process still at version 5 takes from that bucket as it is (empty), and no view refills
  // it after.
  EXPECT_FALSE(TakeOne(*table, {"acme", 1, 0, 5}, 10.0));
  EXPECT_FALSE(TakeOne(*table, {"acme", 2, 0, 6}, 10.0));
  EXPECT_FALSE(TakeOne(*table, {"acme", 1, 0, 5}, 10.0));
  // Lowered at version 7 with 2 taken in the minute: nothing left, and none until they drain.
  EXPECT_FALSE(TakeOne(*table, {"acme", 1, 0, 7}, 10.0));
  EXPECT_FALSE(TakeOne(*table, {"acme", 1, 0, 7}, 40.0));
  EXPECT_TRUE(TakeOne(*table, {"acme", 1, 0, 7}, 130.0));
}

// Two processes taking from one bucket at the same time lose no update: the mutex in the file
// is shared between processes.
TEST_F(SharedBucketsTest, TwoProcessesTakingAtOnceLoseNoUpdate) {
  auto table = Open();
  ASSERT_TRUE(table);
  constexpr int kEach = 100000;
  const SharedBuckets::Limits acme{"acme", 3.0 * kEach, 0, 1};
  // A start line in memory both processes see, so that they take at the same time.
  void* page = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(page, MAP_FAILED);
  auto* ready = static_cast<std::atomic<int>*>(page);
  ready->store(0);
  auto take_all = [&](SharedBuckets& t) {
    ready->fetch_add(1);
    while (ready->load() < 2) {
    }
    for (int i = 0; i < kEach; ++i) {
      t.With(acme, [](core::MinuteBucket& rpm, core::MinuteBucket&) { rpm.TryTake(1, 7.0); });
    }
  };
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::alarm(60);
    auto own = SharedBuckets::Open(file_);
    if (!own) ::_exit(2);
    take_all(**own);
    ::_exit(0);
  }
  take_all(*table);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  ::munmap(page, 4096);
  double left = -1;
  table->With(acme, [&](core::MinuteBucket& rpm, core::MinuteBucket&) { left = rpm.level(7.0); });
  EXPECT_EQ(left, kEach);
}

// A process that dies holding the table's lock does not stop the others (a robust mutex).
TEST_F(SharedBucketsTest, AProcessThatDiesHoldingTheLockDoesNotStopTheOthers) {
  auto table = Open();
  ASSERT_TRUE(table);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto own = SharedBuckets::Open(file_);
    if (!own) ::_exit(2);
    (*own)->With({"acme", 5, 0, 1}, [](core::MinuteBucket& rpm, core::MinuteBucket&) {
      rpm.TryTake(1, 1.0);
      ::_exit(0);  // dies inside, the lock held.
    });
    ::_exit(3);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  ASSERT_EQ(WEXITSTATUS(status), 0);
  int admitted = 0;
  for (int i = 0; i < 6; ++i) admitted += TakeOne(*table, {"acme", 5, 0, 1}, 1.0);
  EXPECT_EQ(admitted, 5);  // the child's take died with it, before it was stored.
}

// After a reboot the monotonic clock starts again: a table from another boot is made afresh.
TEST_F(SharedBucketsTest, ATableFromAnotherBootIsMadeAfresh) {
  {
    auto table = Open();
    ASSERT_TRUE(table);
    EXPECT_TRUE(TakeOne(*table, {"acme", 1, 0, 1}, 50.0));
  }
  {
    std::fstream f(file_, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(16);  // the header's boot id, after the magic and the layout.
    f.write("another-boot-id", 15);
  }
  auto table = Open();
  ASSERT_TRUE(table);
  EXPECT_TRUE(TakeOne(*table, {"acme", 1, 0, 1}, 50.0));
}

TEST_F(SharedBucketsTest, AFileOfAnotherLayoutIsRefusedAndATooLongIdIsLeftToTheCaller) {
  { std::ofstream(file_) << "not a table"; }
  auto refused = SharedBuckets::Open(file_);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().find("11 bytes"), std::string::npos) << refused.error();
  std::filesystem::remove(file_);
  auto table = Open();
  ASSERT_TRUE(table);
  const std::string long_id(SharedBuckets::kMaxIdBytes + 1, 'x');
  EXPECT_FALSE(table->With({long_id, 1, 0, 1}, [](auto&, auto&) { FAIL() << "run"; }));
}

}  // namespace
}  // namespace powerplane::gateway
