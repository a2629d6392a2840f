import Foundation
import Testing
import TestSupport
@testable import PoolCore

/// The mount's two ways of hearing from the kernel: per-CPU io_uring rings
/// (kernel 6.14+, when the fuse module's enable_uring is Y, as scripts/test
/// sets it) and /dev/fuse alone (`-o no_io_uring`, and every older kernel).
@Suite(.serialized, .enabled(if: MountedPool.available, "mounting needs root and /dev/fuse")) struct RingMountTests {
    static let knob = "/sys/module/fuse/parameters/enable_uring"
    static var ringsAllowed: Bool {
        (try? String(contentsOfFile: knob, encoding: .utf8))?.hasPrefix("Y") ?? false
    }

    /// The daemon's threads by name (comm), with the times they were
    /// scheduled in so far (third field of schedstat).
    static func threads(of pid: pid_t) -> [(name: String, slices: Int)] {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
        return tasks.compactMap { task in
            guard let name = try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/comm", encoding: .utf8),
                  let schedule = try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/schedstat", encoding: .utf8),
                  let slices = schedule.split(separator: " ").dropFirst(2).first.flatMap({ Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) })
            else { return nil }
            return (name.trimmingCharacters(in: .whitespacesAndNewlines), slices)
        }
    }

    static func slices(_ threads: [(name: String, slices: Int)], rings: Bool) -> Int {
        threads.filter { $0.name.hasPrefix("poolfs-ring-") == rings }.reduce(0) { $0 + $1.slices }
    }

    /// Reads `count` 4 KiB blocks (each a request: files are opened for
    /// direct I/O) and checks each against `bytes`.
    static func readBlocks(_ path: String, _ bytes: [UInt8], count: Int) throws {
        let descriptor = open(path, O_RDONLY)
        #expect(descriptor >= 0)
        defer { close(descriptor) }
        var block = [UInt8](repeating: 0, count: 4096)
        let blocks = bytes.count / 4096
        for index in 0..<count {
            let at = (index * 7919) % blocks * 4096
            #expect(pread(descriptor, &block, 4096, off_t(at)) == 4096)
            if block[...] != bytes[at..<(at + 4096)] {
                Issue.record("block at \(at) differs")
                return
            }
        }
    }

    @Test(.enabled(if: RingMountTests.ringsAllowed, "the fuse module's enable_uring is not Y"))
    func requestsAreAnsweredOnTheRingOfEachCPU() throws {
        let mounted = try MountedPool()
        let bytes = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 2_654_435_761 >> 7) }
        #expect(FileManager.default.createFile(atPath: mounted.path("blocks"), contents: Data(bytes)))
        let before = RingMountTests.threads(of: mounted.daemon.pid)
        // One ring thread per CPU the kernel may run on.
        #expect(before.filter { $0.name.hasPrefix("poolfs-ring-") }.count == sysconf(Int32(_SC_NPROCESSORS_CONF)))
        try RingMountTests.readBlocks(mounted.path("blocks"), bytes, count: 2000)
        let after = RingMountTests.threads(of: mounted.daemon.pid)
        let ring = RingMountTests.slices(after, rings: true) - RingMountTests.slices(before, rings: true)
        let device = RingMountTests.slices(after, rings: false) - RingMountTests.slices(before, rings: false)
        // Each read ran a ring thread; /dev/fuse's threads stayed asleep.
        #expect(ring >= 2000, "ring threads scheduled \(ring) times, /dev/fuse threads \(device)")
        #expect(device < 200, "ring threads scheduled \(ring) times, /dev/fuse threads \(device)")
        // A reader bound to CPU k is answered by ring k's thread.
        for cpu in 0..<before.filter({ $0.name.hasPrefix("poolfs-ring-") }).count {
            let name = "poolfs-ring-\(cpu)"
            let start = RingMountTests.threads(of: mounted.daemon.pid).filter { $0.name == name }.reduce(0) { $0 + $1.slices }
            let reader = try run("taskset", ["-c", "\(cpu)", "dd", "if=\(mounted.path("blocks"))", "of=/dev/null", "bs=4k", "count=256"])
            #expect(reader.status == 0, "\(reader.output)")
            let end = RingMountTests.threads(of: mounted.daemon.pid).filter { $0.name == name }.reduce(0) { $0 + $1.slices }
            #expect(end - start >= 256, "\(name) scheduled \(end - start) times for 256 reads on CPU \(cpu)")
        }
        // And the pool says so.
        #expect(mounted.text(".pool/info")?.contains("\nrequests   io_uring, a ring per CPU\n") == true)
        #expect(mounted.text(".pool/info.json")?.contains("\"requests\" : \"io_uring, a ring per CPU\"") == true)
    }

    /// The thread of ring `cpu`, by its name.
    static func ringThread(of pid: pid_t, cpu: Int) -> pid_t? {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
        return tasks.first { task in
            (try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/comm", encoding: .utf8))?
                .trimmingCharacters(in: .whitespacesAndNewlines) == "poolfs-ring-\(cpu)"
        }.flatMap { pid_t($0) }
    }

    /// A ring's thread waits at idle priority, so a CPU busy with other
    /// work would keep its requests waiting; the watchdog gives it normal
    /// priority while a request waits. Here a busy loop holds CPU 0 and a
    /// reader bound there reads until ring 0's thread is seen raised.
    @Test(.enabled(if: RingMountTests.ringsAllowed, "the fuse module's enable_uring is not Y"))
    func theWatchdogRaisesARingThreadItsBusyCPUStarves() throws {
        let mounted = try MountedPool()
        let bytes = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 2_246_822_519 >> 9) }
        #expect(FileManager.default.createFile(atPath: mounted.path("blocks"), contents: Data(bytes)))
        let thread = try #require(RingMountTests.ringThread(of: mounted.daemon.pid, cpu: 0))
        // Idle priority (linux/sched.h SCHED_IDLE, 5), unless the watchdog
        // has raised it already: other tests may keep CPU 0 busy.
        #expect([5, SCHED_OTHER].contains(sched_getscheduler(thread)))
        let busy = try Child("taskset", ["-c", "0", "sh", "-c", "while :; do :; done"])
        defer { busy.kill9() }
        var raised = false
        for _ in 0..<30 where !raised {
            let reader = try Child("taskset", ["-c", "0", "dd", "if=\(mounted.path("blocks"))", "of=/dev/null",
                                               "bs=4k", "count=64"])
            // Looked at while the reader reads (a raise lasts a second, then
            // goes at the thread's next request, which other tests may make).
            while !raised, (try? String(contentsOfFile: "/proc/\(reader.pid)/stat", encoding: .utf8))?.contains(") Z ") == false {
                raised = sched_getscheduler(thread) == SCHED_OTHER
                usleep(200)
            }
            raised = raised || sched_getscheduler(thread) == SCHED_OTHER
            #expect(reader.wait() == 0)
        }
        #expect(raised, "ring 0's thread stayed at idle priority under a busy CPU")
        busy.kill9()
        busy.wait()
        // Every block still reads back right, and nothing was left waiting.
        try RingMountTests.readBlocks(mounted.path("blocks"), bytes, count: 256)
    }

    /// A fallocate of a gigabyte takes a second here (zeroing fresh memory,
    /// slow to touch on this VM). A ring's thread answers one request at a
    /// time: its helper serves the fallocate, and the file system lets go
    /// of its tree between chunks, so that a process on the same CPU reads
    /// a file, creates one and removes it while the fallocate still waits
    /// in its system call.
    @Test(.enabled(if: RingMountTests.ringsAllowed, "the fuse module's enable_uring is not Y"))
    func aSlowRequestDoesNotHoldUpTheOthersOfItsCPU() throws {
        let mounted = try MountedPool(size: 1536 << 20, pageSize: 64 << 10)
        let bytes = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 3_266_489_917 >> 11) }
        #expect(FileManager.default.createFile(atPath: mounted.path("blocks"), contents: Data(bytes)))
        // A process bound to CPU 0, started first: it reads, creates and removes when told.
        let reader = try Child("taskset", ["-c", "0", "sh", "-c",
                                           "read go; dd if=\"$0\" of=/dev/null bs=4k count=16 2>/dev/null && echo new > \"$0.new\" && rm \"$0.new\" && echo done",
                                           mounted.path("blocks")])
        let slow = try Child("taskset", ["-c", "0", "fallocate", "-l", "1G", mounted.path("big")])
        // linux/unistd.h __NR_fallocate.
        #if arch(x86_64)
        let fallocateCall = "285 "
        #else
        let fallocateCall = "47 "
        #endif
        func inFallocate() -> Bool {
            (try? String(contentsOfFile: "/proc/\(slow.pid)/syscall", encoding: .utf8))?.hasPrefix(fallocateCall) == true
        }
        func ended() -> Bool {
            (try? String(contentsOfFile: "/proc/\(slow.pid)/stat", encoding: .utf8))?.contains(") Z ") != false
        }
        // Until the fallocate is seen in its system call (or has ended:
        // then the test fails).
        var seen = false
        while !seen && !ended() { seen = inFallocate() }
        #expect(seen, "fallocate was never seen in its system call")
        // A millisecond or two, where zeroing the gigabyte takes a tenth
        // of a second or more.
        #expect(reader.ask("go") == "done")
        // In its system call still (seen so once in a while: the task may be
        // running for a moment; past the call it is never seen there again).
        #expect((0..<1000).contains { _ in inFallocate() }, "the process on CPU 0 was answered only after the fallocate")
        #expect(RingMountTests.threads(of: mounted.daemon.pid).contains { $0.name == "poolfs-slow-0" })
        #expect(slow.wait() == 0)
        var attributes = stat()
        #expect(stat(mounted.path("big"), &attributes) == 0 && attributes.st_size == 1 << 30 && attributes.st_blocks == (1 << 30) / 512)
        try RingMountTests.readBlocks(mounted.path("blocks"), bytes, count: 64)
    }

    @Test func devFuseAloneNeedsNoRings() throws {
        let mounted = try MountedPool(options: ["-o", "no_io_uring"])
        let bytes = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 40503 >> 3) }
        #expect(FileManager.default.createFile(atPath: mounted.path("blocks"), contents: Data(bytes)))
        try RingMountTests.readBlocks(mounted.path("blocks"), bytes, count: 500)
        #expect(!RingMountTests.threads(of: mounted.daemon.pid).contains { $0.name.hasPrefix("poolfs-ring-") })
        #expect(mounted.text(".pool/info")?.contains("\nrequests   /dev/fuse\n") == true)
    }

    /// The same files, whichever way requests come: bytes, names and sizes
    /// through writes of every size, a rename, a truncate and a remount.
    @Test(arguments: [[String](), ["-o", "no_io_uring"]])
    func bothWaysKeepFilesWhole(options: [String]) throws {
        let mounted = try MountedPool(size: 64 << 20, options: options)
        if options.isEmpty && RingMountTests.ringsAllowed {
            #expect(mounted.text(".pool/info")?.contains("\nrequests   io_uring") == true)
        }
        var generator = SystemRandomNumberGenerator()
        let big = (0..<(5 << 20) + 123).map { _ in UInt8.random(in: 0...255, using: &generator) }
        let source = mounted.scratch.path + "/source"
        #expect(FileManager.default.createFile(atPath: source, contents: Data(big)))
        #expect(try run("cp", [source, mounted.path("big")]).status == 0)
        #expect(try run("cmp", [source, mounted.path("big")]).status == 0)
        let small = "a few bytes\n"
        try small.write(toFile: mounted.path("small"), atomically: false, encoding: .utf8)
        #expect(try run("mv", [mounted.path("small"), mounted.path("renamed")]).status == 0)
        // One request of exactly max_write each way: a ring's whole payload.
        let block = Array(big[..<(1 << 20)])
        let descriptor = open(mounted.path("block"), O_RDWR | O_CREAT, 0o644)
        #expect(descriptor >= 0)
        #expect(pwrite(descriptor, block, block.count, 0) == block.count)
        var back = [UInt8](repeating: 0, count: block.count)
        #expect(pread(descriptor, &back, back.count, 0) == back.count && back == block)
        close(descriptor)
        #expect(truncate(mounted.path("big"), 3 << 20) == 0)
        try mounted.remount()
        #expect(mounted.text("renamed") == small)
        let kept = FileManager.default.contents(atPath: mounted.path("big"))
        #expect(kept == Data(big[..<(3 << 20)]))
        #expect(mounted.list("").filter { $0 != ".pool" } == ["big", "block", "renamed"])
    }
}
