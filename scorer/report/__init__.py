"""The report room: renderings of one ReportContent (today the Excel workbook)."""
