// The nav bar every page shares: the current page marked, operator-only parts hidden from
// viewers, and logout.

import { api, hasRole } from "./api.js";

export function setUpNav() {
  const page = document.body.dataset.page;
  for (const link of document.querySelectorAll("[data-nav]")) {
    if (link.dataset.nav === page) link.setAttribute("aria-current", "page");
  }
  if (!hasRole("operator")) {
    for (const node of document.querySelectorAll(".operator-only")) node.hidden = true;
  }
  document.getElementById("logout")?.addEventListener("click", async () => {
    try {
      await api("/api/auth/logout", { method: "POST" });
    } catch {
      // Logged out already, or the server is gone: the login page is right either way.
    }
    location.assign("/login");
  });
}
