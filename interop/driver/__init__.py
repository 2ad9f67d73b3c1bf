"""The interop driver behind interop/run_interop.py, in modules:

    spec        the rows: one frozen RowSpec each
    netns       the private network namespace (the one place that enters it)
    procs       child processes: started in their own group, stopped by PID with timeouts
    ffmpeg      FFmpeg: command line, framecrc parsing, timestamp gaps
    control     gRPC stubs, the event watcher, free UDP ports
    tap         a UDP relay that records every forwarded RTP header
    publishers  one small class per publisher (command line, environment, version)
    checks      the check list and the checks every row shares (WHIP exchange, publish page)
    scenario    a plain publish; reconnect and simulcast are its subclasses
    row         one row, phase by phase
    results     a row's result object and the summary lines
    lossy       loss models and the lossy UDP relay (the loss harness, the lossy row)
    whip_proxy  the WHIP proxy that puts the relay into the media path of any gateway
    rtpstats    the consumer's UDP sink and the sent-vs-received accounting
"""
