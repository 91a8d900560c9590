// Drives the playground in Debian's Chromium (headless), as a developer
// would: type a message, see the app's card with the sender's name, click
// the card's action button, see the card updated in place. Saves a
// screenshot. Usage: node drive.mjs PLAYGROUND_URL SCREENSHOT.png
import { chromium } from "playwright-core";

const [url, screenshot] = process.argv.slice(2);
const step = (what) => console.log(`step: ${what}`);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  page.on("pageerror", (e) => console.log(`page error: ${e.message}`));
  await page.goto(url);
  await page.waitForSelector("body[data-ready=true]");
  step("page ready");

  await page.fill("[data-testid=identity]", "Grace Hopper");
  await page.fill("[data-testid=composer]", "Hello from the browser");
  await page.click("[data-testid=send]");
  const own = page.locator("[data-testid=user-message]", { hasText: "Hello from the browser" });
  await own.waitFor({ timeout: 30000 });
  step("message shown");

  const card = page.locator("[data-testid=app-message] [data-testid=card]").first();
  await card.waitFor({ timeout: 60000 });
  const title = await card.locator("[data-testid=card-title]").innerText();
  if (title !== "Grace Hopper") throw new Error(`card title ${JSON.stringify(title)}, expected the sender's name`);
  const said = await card.innerText();
  if (!said.includes("You said: Hello from the browser")) throw new Error(`card text: ${said}`);
  step("card rendered with the sender's name");

  // The API call that created it is shown next to it.
  await page.locator("[data-testid=app-message] .calls", { hasText: "POST /v1/spaces/PLAYGROUND/messages" }).first().waitFor({ timeout: 10000 });
  step("api call shown");

  await card.locator("[data-testid=card-button]", { hasText: "Mark as helpful" }).click();
  await page.locator("[data-testid=app-message] [data-testid=card]", { hasText: "Grace Hopper marked this answer as helpful." }).waitFor({ timeout: 60000 });
  await page.locator("[data-testid=app-message] .calls", { hasText: /(PUT|PATCH) \/v1\/spaces\/PLAYGROUND\/messages\// }).first().waitFor({ timeout: 10000 });
  step("card updated in place");

  // A reply the simulator refuses shows in its thread, with the error.
  const origin = new URL(url).origin;
  await page.request.post(`${origin}/_sim/control`, { data: { failNext: 1, failStatus: 400 } });
  await page.fill("[data-testid=composer]", "This reply will be refused");
  await page.click("[data-testid=send]");
  await page.locator(".thread", { hasText: "This reply will be refused" }).locator("[data-testid=refused]", { hasText: "400" }).waitFor({ timeout: 60000 });
  step("refused reply shown in its thread");

  await page.fill("[data-testid=composer]", "And a second thread");
  await page.click("[data-testid=send]");
  await page.locator("[data-testid=app-message] [data-testid=card]", { hasText: "You said: And a second thread" }).waitFor({ timeout: 60000 });
  step("second thread answered");

  // Every widget the playground draws, and the fallback for one it does not.
  const rich = {
    cardsV2: [{ cardId: "rich", card: {
      header: { title: "Rich card", subtitle: "all widgets", imageUrl: "data:image/gif;base64,R0lGODlhAQABAAAAACw=", imageType: "CIRCLE" },
      sections: [
        { header: "Section one", widgets: [
          { decoratedText: { topLabel: "Top", text: "Decorated", bottomLabel: "Bottom", startIcon: { knownIcon: "STAR" } } },
          { image: { imageUrl: "data:image/gif;base64,R0lGODlhAQABAAAAACw=", altText: "pixel" } },
          { divider: {} },
          { columns: { columnItems: [{ widgets: [{ textParagraph: { text: "Left column" } }] }, { widgets: [{ textParagraph: { text: "Right column" } }] }] } },
          { grid: { title: "A grid", columnCount: 2, items: [{ title: "Cell A" }, { title: "Cell B" }] } },
          { selectionInput: { name: "pick", label: "Pick one", type: "DROPDOWN", items: [{ text: "x", value: "x" }] } },
        ] },
      ],
    } }],
    sender: { name: "users/app", displayName: "Some app", type: "BOT" },
  };
  await page.request.post(`${origin}/_sim/spaces/PLAYGROUND/messages`, { data: rich });
  const drawn = page.locator("[data-card-id=rich]");
  await drawn.waitFor({ timeout: 10000 });
  for (const selector of [".card-header img.circle", ".decorated .top", ".widget img", "hr.divider", ".columns > div", ".grid .item", ".fallback"]) {
    if (await drawn.locator(selector).count() === 0) throw new Error(`the rich card has no ${selector}`);
  }
  if (!(await drawn.locator(".fallback").innerText()).includes("selectionInput")) throw new Error("the fallback does not name the widget");
  step("every widget drawn");

  await page.screenshot({ path: screenshot, fullPage: false });
  step("screenshot saved");
} finally {
  await browser.close();
}
