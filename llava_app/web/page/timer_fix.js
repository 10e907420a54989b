/* Put in the page's <head> before Gradio's own scripts (web/server.py, HeadScript), so that Gradio's status
 * trackers take this requestAnimationFrame when they load.
 *
 * Gradio 6's status tracker counts a pending event's seconds in a requestAnimationFrame loop that only a
 * change of status ends. A tracker removed while pending never sees that change: the loading screen shown
 * while the app starts is one, on every page. Its loop then runs at the display's frame rate for as long as
 * the tab is open, about 7 % of a CPU core in Chromium with nothing happening on the page (a laptop's fan, a
 * phone's battery). Here a tracker's loop goes on only while some tracker in the page is shown pending (its
 * seconds on screen); any other loop ends at its next frame. A tracker shown pending later starts a loop of
 * its own, as before. */
(() => {
  const frame = window.requestAnimationFrame;
  if (typeof frame !== "function") return;
  const TRACKER = /\/statustracker-[^/]*\.js/;  // the tracker's module, as Gradio's build names it
  const shown = () => document.querySelector('[data-testid="status-tracker"]:not(.hide) .progress-text') !== null;
  let inTracker = false;
  const tracked = (callback) => frame.call(window, (time) => {
    inTracker = true;
    try { callback(time); } finally { inTracker = false; }
  });
  window.requestAnimationFrame = function requestAnimationFrame(callback) {
    if (inTracker) return shown() ? tracked(callback) : 0;  // a tracker's next frame: the loop goes on, or ends
    if (TRACKER.test(new Error().stack || "")) return tracked(callback);  // a tracker's loop begins
    return frame.call(window, callback);
  };
})();
