"""How the site writes dates, times and numbers (settings.FORMAT_MODULE_PATH).

Django 5.2 always localises, and a locale's own formats win over settings such as
DATE_FORMAT, so the house style is a format module: "2 Nov 2026" for a date,
"2 Nov 2026, 12:00" for an instant (24-hour clock, in the account's time zone in the
admin: crm.middleware.AccountTimeZoneMiddleware). Code names these formats
(`date_format(value, "DATETIME_FORMAT")`, `{{ value|date:"DATETIME_FORMAT" }}`) rather
than spelling a format of its own. Input formats are left to the locale.
"""
