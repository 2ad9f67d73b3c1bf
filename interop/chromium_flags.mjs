// The Chromium command-line flags of every interop publisher (browser_publish.mjs, the
// loss harness's page_publish.mjs): headless, nothing fetched from outside, a fake camera and
// microphone without a prompt, ICE candidates on loopback without mDNS names.
export const CHROMIUM_FLAGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
  "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
  "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns",
];
